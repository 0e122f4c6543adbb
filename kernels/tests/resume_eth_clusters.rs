//! Deposit-address clustering resumed over new blocks ([`cluster_eth_resumed`]) against
//! the run over every transfer ([`cluster_eth`]) on a generated account chain (exchange
//! hubs, deposit addresses sweeping into them, scams, peels) committed at five heights:
//! the same deposit addresses, members, cluster ids and sizes after each, for several
//! rules (the defaults, a short sweep delay, one sender at most).

use ferret_kernels::account::deposit::{DepositRule, cluster_eth};
use ferret_kernels::account::deposit_resume::{DepositState, cluster_eth_resumed};
use ferret_kernels::device::Backend;
use ferret_testkit::synth::account::{chain, warehouse};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_deposit_clustering_equals_a_run_over_every_transfer() {
    let (rows, labels) = chain(9, 150, false);
    let rules = [
        DepositRule::default(),
        DepositRule {
            max_delay_blocks: 3,
            ..Default::default()
        },
        DepositRule {
            max_senders: 1,
            ..Default::default()
        },
    ];
    let mut states: Vec<Option<DepositState>> = vec![None; rules.len()];
    let (mut clustered, mut shrank) = (0, 0);
    let mut last_deposits = vec![Vec::new(); rules.len()];
    for h in [30i64, 70, 71, 110, 150] {
        let upto: Vec<_> = rows.iter().filter(|r| r.block <= h).cloned().collect();
        let wh = warehouse(&format!("memory://eth-clusters-{h}"), &upto, &labels, 9).await;
        for (i, rule) in rules.iter().enumerate() {
            let what = format!("height {h}, rule {rule:?}");
            let want = cluster_eth(&wh, &Backend::Cpu, rule)
                .await
                .expect("from scratch");
            let (got, st) = cluster_eth_resumed(&wh, &Backend::Cpu, rule, states[i].as_ref())
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(got.deposit_addresses, want.deposit_addresses, "{what}");
            assert_eq!(got.clusters.addresses, want.clusters.addresses, "{what}");
            assert_eq!(got.clusters.cluster_id, want.clusters.cluster_id, "{what}");
            assert_eq!(
                got.clusters.cluster_size, want.clusters.cluster_size,
                "{what}"
            );
            assert_eq!(
                got.clusters.linked_transactions, want.clusters.linked_transactions,
                "{what}"
            );
            assert_eq!(st.height, Some(h), "{what}");
            if !want.clusters.addresses.is_empty() {
                clustered += 1;
            }
            // A deposit address of an earlier height that no longer is one (the rule is
            // not monotone): the case a union-find that only adds links would get wrong.
            if last_deposits[i]
                .iter()
                .any(|d| !want.deposit_addresses.contains(d))
            {
                shrank += 1;
            }
            last_deposits[i] = want.deposit_addresses.clone();
            states[i] = Some(st);
        }
    }
    assert!(clustered >= 10, "only {clustered} runs found clusters");
    assert!(
        shrank > 0,
        "no deposit address was ever disqualified by later blocks"
    );
}
