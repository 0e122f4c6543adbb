//! `ferret labels import`: CSV, GraphSense TagPack YAML (header fields inherited) and
//! plain address lists (the OFAC fixtures) into the `labels` table; re-importing adds
//! nothing; invalid addresses and malformed files give errors naming file and line.

mod common;

use common::*;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = ferret(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sql(wh: &str, q: &str) -> String {
    let (ok, out, err) = run(&["sql", "--warehouse", wh, "--format", "csv", q]);
    assert!(ok, "{err}");
    out
}

#[test]
fn labels_import_csv_tagpack_and_lists_without_duplicates() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let wh = tmp.path().join("wh").to_string_lossy().into_owned();

    // CSV with a header, a source and confidence on one row, a bech32 address in upper
    // case (normalised to lower case), and a comment.
    let csv = tmp.path().join("known.csv");
    std::fs::write(
        &csv,
        "address,label,category,source,confidence\n\
         # exchanges\n\
         1Q2TWHE3GMdB6BZKafqwxXtWAWgFt5Jvm3,hal,person,bitcointalk,90\n\
         BC1QAR0SRRR7XFKVY5L643LYDNW9RE59GTZZWF5MDQ,example,exchange,,\n",
    )
    .expect("write");
    let (ok, out, err) = run(&[
        "labels",
        "import",
        "--warehouse",
        &wh,
        csv.to_str().expect("utf8"),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("read 2 labels, 2 new"), "{out}");

    // A TagPack: the header's label/source/currency/confidence are inherited, a tag
    // overrides its own label and category.
    let tagpack = tmp.path().join("pack.yaml");
    std::fs::write(
        &tagpack,
        "title: Test pack\ncreator: Ferret tests\nlabel: satoshi-era\ncategory: miner\n\
         source: https://example.org/pack\ncurrency: BTC\nconfidence: ownership\ntags:\n\
         - address: 12cbQLTFMXRnSzktFkuoG3eHoMeFtpTu3S\n\
         - address: 1DUDsfc23Dv9sPMEk5RsrtfzCw5ofi5sVW\n  label: early-user\n  category: user\n",
    )
    .expect("write");
    let (ok, out, err) = run(&[
        "labels",
        "import",
        "--warehouse",
        &wh,
        tagpack.to_str().expect("utf8"),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("read 2 labels, 2 new"), "{out}");

    // The OFAC lists: plain addresses, one chain each. The XBT list holds one Tron
    // address (line 355), which is refused unless --skip-invalid says to go on.
    let fx = fixtures();
    let Some(fx) = fx else { return };
    let xbt = fx.join("labels/ofac-sanctioned-XBT.txt");
    let eth = fx.join("labels/ofac-sanctioned-ETH.txt");
    let lists = [xbt.to_str().expect("utf8"), eth.to_str().expect("utf8")];
    let mut args = vec![
        "labels",
        "import",
        "--warehouse",
        &wh,
        "--category",
        "sanctioned",
        "--source",
        "ofac-sdn",
    ];
    args.extend(lists);
    let (ok, _, err) = run(&args);
    assert!(
        !ok && err.contains("ofac-sanctioned-XBT.txt:355")
            && err.contains("TUCsTq7TofTCJRRoHk6RvhMoS2mJLm5Yzq"),
        "{err}"
    );
    args.push("--skip-invalid");
    let (ok, out, err) = run(&args);
    assert!(ok, "{err}");
    let n_xbt = std::fs::read_to_string(&xbt)
        .expect("xbt")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
        - 1;
    let n_eth = std::fs::read_to_string(&eth)
        .expect("eth")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    assert!(
        out.contains(&format!("read {} labels", n_xbt + n_eth)) && out.contains("1 skipped"),
        "{out}"
    );

    let expect_total = 4 + n_xbt + n_eth;
    let counts = sql(
        &wh,
        "SELECT chain, category, count(*) AS n FROM labels GROUP BY chain, category ORDER BY chain, category",
    );
    assert_eq!(
        counts,
        format!(
            "chain,category,n\nbtc,exchange,1\nbtc,miner,1\nbtc,person,1\nbtc,sanctioned,{n_xbt}\nbtc,user,1\neth,sanctioned,{n_eth}\n"
        )
    );
    // Inherited and overridden TagPack fields, CSV fields, normalisation.
    assert_eq!(
        sql(
            &wh,
            "SELECT address, label, category, source, confidence FROM labels WHERE category IN ('miner', 'user', 'person', 'exchange') ORDER BY address"
        ),
        "address,label,category,source,confidence\n\
         12cbQLTFMXRnSzktFkuoG3eHoMeFtpTu3S,satoshi-era,miner,https://example.org/pack,ownership\n\
         1DUDsfc23Dv9sPMEk5RsrtfzCw5ofi5sVW,early-user,user,https://example.org/pack,ownership\n\
         1Q2TWHE3GMdB6BZKafqwxXtWAWgFt5Jvm3,hal,person,bitcointalk,90\n\
         bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq,example,exchange,known.csv,\n"
    );
    // Ethereum addresses are lower-cased.
    assert_eq!(
        sql(
            &wh,
            "SELECT count(*) AS n FROM labels WHERE chain = 'eth' AND address <> lower(address)"
        ),
        "n\n0\n"
    );

    // Importing everything again adds nothing.
    let mut args = vec![
        "labels",
        "import",
        "--warehouse",
        &wh,
        "--category",
        "sanctioned",
        "--source",
        "ofac-sdn",
        "--skip-invalid",
    ];
    args.extend(lists);
    let (ok, out, err) = run(&args);
    assert!(ok, "{err}");
    assert!(
        out.contains(" 0 new") && out.contains("(unchanged)"),
        "{out}"
    );
    let (ok, out, err) = run(&[
        "labels",
        "import",
        "--warehouse",
        &wh,
        csv.to_str().expect("utf8"),
        tagpack.to_str().expect("utf8"),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("read 4 labels, 0 new") && out.contains("(unchanged)"),
        "{out}"
    );
    assert_eq!(
        sql(&wh, "SELECT count(*) AS n FROM labels"),
        format!("n\n{expect_total}\n")
    );
}

#[test]
fn bad_label_files_say_where_and_what() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let wh = tmp.path().join("wh").to_string_lossy().into_owned();
    let write = |name: &str, body: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, body).expect("write");
        p.to_string_lossy().into_owned()
    };

    // An invalid address fails the import, naming file and line; nothing is written.
    let bad = write(
        "bad.csv",
        "1Q2TWHE3GMdB6BZKafqwxXtWAWgFt5Jvm3,hal,person\nnot-an-address,x,scam\n",
    );
    let (ok, _, err) = run(&["labels", "import", "--warehouse", &wh, &bad]);
    assert!(!ok);
    assert!(
        err.contains("bad.csv:2") && err.contains("`not-an-address` is not a Bitcoin address"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(sql(&wh, "SELECT count(*) AS n FROM labels"), "n\n0\n");
    // --skip-invalid imports the rest and reports the skipped one.
    let (ok, out, err) = run(&[
        "labels",
        "import",
        "--warehouse",
        &wh,
        "--skip-invalid",
        &bad,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("read 1 labels, 1 new, 1 skipped"), "{out}");
    assert!(
        err.contains("skipped") && err.contains("bad.csv:2"),
        "{err}"
    );

    // Too few CSV fields.
    let short = write("short.csv", "1Q2TWHE3GMdB6BZKafqwxXtWAWgFt5Jvm3,hal\n");
    let (ok, _, err) = run(&["labels", "import", "--warehouse", &wh, &short]);
    assert!(
        !ok && err.contains("short.csv:1") && err.contains("expected address,label,category"),
        "{err}"
    );

    // A plain list without --category.
    let list = write("list.txt", "1Q2TWHE3GMdB6BZKafqwxXtWAWgFt5Jvm3\n");
    let (ok, _, err) = run(&["labels", "import", "--warehouse", &wh, &list]);
    assert!(!ok && err.contains("needs --category"), "{err}");

    // Broken YAML, a TagPack without tags, and GraphSense's own example pack (whose
    // addresses are placeholders, not real addresses).
    let yaml = write("broken.yaml", "title: x\ntags: [unclosed\n");
    let (ok, _, err) = run(&["labels", "import", "--warehouse", &wh, &yaml]);
    assert!(
        !ok && err.contains("broken.yaml") && err.contains("not YAML"),
        "{err}"
    );
    let notags = write("notags.yaml", "title: x\nlabel: y\n");
    let (ok, _, err) = run(&["labels", "import", "--warehouse", &wh, &notags]);
    assert!(!ok && err.contains("needs a `tags` list"), "{err}");
    if let Some(fx) = fixtures() {
        let example = fx.join("labels/tagpacks/ex_addr_tagpack.yaml");
        let (ok, _, err) = run(&[
            "labels",
            "import",
            "--warehouse",
            &wh,
            example.to_str().expect("utf8"),
        ]);
        assert!(
            !ok && err.contains("ex_addr_tagpack.yaml:1")
                && err.contains("1bacdeddg32dsfk5692dmn23"),
            "{err}"
        );
    }
    // A missing file.
    let (ok, _, err) = run(&[
        "labels",
        "import",
        "--warehouse",
        &wh,
        "/nonexistent/labels.csv",
    ]);
    assert!(!ok && err.contains("/nonexistent/labels.csv"), "{err}");
}

#[test]
fn hostile_label_files_are_refused_with_bounded_memory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let wh = tmp.path().join("wh").to_string_lossy().into_owned();
    // "Billion laughs": nine levels of nine aliases, 9^9 nodes once expanded.
    let mut yaml = String::from("title: laughs\ncreator: x\nlabel: &a0 \"lol\"\n");
    for k in 1..=9 {
        let refs: Vec<String> = (0..9).map(|_| format!("*a{}", k - 1)).collect();
        yaml.push_str(&format!("l{k}: &a{k} [{}]\n", refs.join(", ")));
    }
    yaml.push_str("tags:\n  - address: 1BoatSLRHtKNngkdXEeobR76b53LETtpyT\n    category: scam\n");
    let bomb = tmp.path().join("bomb.yaml");
    std::fs::write(&bomb, yaml).expect("write");
    let (ok, _, err) = run(&[
        "labels",
        "import",
        "--warehouse",
        &wh,
        bomb.to_str().expect("utf8"),
    ]);
    assert!(
        !ok && err.contains("bomb.yaml") && err.contains("aliases expanded"),
        "{err}"
    );
    // An endless file and an oversized one: refused at the limit, not read without bound.
    let big = tmp.path().join("big.csv");
    std::fs::write(&big, "x".repeat(3 << 20)).expect("write");
    for file in ["/dev/zero", big.to_str().expect("utf8")] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferret"))
            .args(["labels", "import", "--warehouse", &wh, file])
            .env("FERRET_MAX_INPUT_BYTES", "1048576")
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("1048576-byte limit"),
            "{file}: {err}"
        );
    }
}

/// `ferret labels export` in every format, read back by `ferret labels import` into a
/// fresh warehouse: the same `labels` rows. Filters and the TLP marking as asked.
#[test]
fn labels_export_round_trips_through_every_format() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let wh = tmp.path().join("wh").to_string_lossy().into_owned();
    let csv = tmp.path().join("mixed.csv");
    std::fs::write(
        &csv,
        "address,label,category,source,confidence\n\
         1Q2TWHE3GMdB6BZKafqwxXtWAWgFt5Jvm3,\"hal, \"\"the\"\" first\",person,bitcointalk,90\n\
         bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq,example ✓,exchange,,\n\
         0xd90e2f925da726b50c4ed8d0fb90ad053324f31b,tornado,mixer,OFAC SDN,authority\n\
         3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy,compound wallet,scam,case-7,0.8\n",
    )
    .expect("write");
    let (ok, _, err) = run(&[
        "labels",
        "import",
        "--warehouse",
        &wh,
        csv.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let rows = "SELECT chain, address, label, category, source, coalesce(confidence, '-') FROM labels ORDER BY 1, 2, 3";
    let want = sql(&wh, rows);
    assert_eq!(want.lines().count(), 5, "{want}");
    for (format, ext) in [
        ("csv", "csv"),
        ("tagpack", "yaml"),
        ("misp", "misp.json"),
        ("stix", "stix.json"),
    ] {
        let out = tmp.path().join(format!("export.{ext}"));
        let (ok, stdout, err) = run(&[
            "labels",
            "export",
            "--warehouse",
            &wh,
            "--format",
            format,
            "--out",
            out.to_str().unwrap(),
            "--tlp",
            "green",
        ]);
        assert!(ok, "{format}: {err}");
        assert!(stdout.contains("exported 4 labels"), "{stdout}");
        let text = std::fs::read_to_string(&out).unwrap();
        if format == "misp" {
            assert!(text.contains("tlp:green"), "{text}");
        }
        if format == "stix" {
            assert!(text.contains("marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da"));
        }
        let back = tmp
            .path()
            .join(format!("wh-{format}"))
            .to_string_lossy()
            .into_owned();
        let (ok, _, err) = run(&[
            "labels",
            "import",
            "--warehouse",
            &back,
            out.to_str().unwrap(),
        ]);
        assert!(ok, "{format}: {err}");
        assert_eq!(sql(&back, rows), want, "{format} round trip");
    }
    // Filters: one category, one chain.
    let out = tmp.path().join("scam.csv");
    let (ok, stdout, err) = run(&[
        "labels",
        "export",
        "--warehouse",
        &wh,
        "--format",
        "csv",
        "--out",
        out.to_str().unwrap(),
        "--category",
        "scam",
        "--category",
        "mixer",
        "--chain",
        "btc",
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("exported 1 labels"), "{stdout}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.contains("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy") && !text.contains("0xd90e"),
        "{text}"
    );
    // Bad arguments: a clear error, nothing written.
    let (ok, _, err) = run(&[
        "labels",
        "export",
        "--warehouse",
        &wh,
        "--format",
        "pdf",
        "--out",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("unknown format"), "{err}");
    assert!(!tmp.path().join("x").exists());
}

/// OFAC's SDN list in its XML form: the real sanctioned addresses of the fixtures spread
/// over SDN entries as OFAC publishes them (several addresses per entry, other id types
/// beside them, USDT on Ethereum and on TRON, Monero), imported as the plain lists are.
#[test]
fn labels_import_ofac_sdn_xml() {
    let Some(fx) = fixtures() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let read = |f: &str| -> Vec<String> {
        std::fs::read_to_string(fx.join("labels").join(f))
            .expect("fixture")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    };
    let (xbt, eth) = (
        read("ofac-sanctioned-XBT.txt"),
        read("ofac-sanctioned-ETH.txt"),
    );
    let mut xml = String::from(
        "<?xml version=\"1.0\" standalone=\"yes\"?>\n<sdnList xmlns=\"http://tempuri.org/sdnList.xsd\">\n\
         <publshInformation><Publish_Date>12/01/2026</Publish_Date></publshInformation>\n",
    );
    let mut ids = xbt
        .iter()
        .map(|a| ("XBT", a.clone()))
        .chain(
            eth.iter()
                .enumerate()
                .map(|(i, a)| (if i % 3 == 0 { "USDT" } else { "ETH" }, a.clone())),
        )
        .collect::<Vec<_>>();
    ids.push(("USDT", "TXbTLwsyBAbSrLo5jo4RZEjRrqW5iZyQWd".into()));
    ids.push(("XMR", "46hy5zUxWLWb1U6BfR1Cq1BwXw6n1W1XyK3n".into()));
    for (n, chunk) in ids.chunks(3).enumerate() {
        xml.push_str(&format!(
            "<sdnEntry><uid>{}</uid><lastName>ENTITY {n} &amp; PARTNERS</lastName><sdnType>Entity</sdnType>\
             <programList><program>CYBER2</program></programList><idList>\
             <id><uid>1</uid><idType>Registration Number</idType><idNumber>R-{n}</idNumber></id>",
            30000 + n
        ));
        for (k, (asset, a)) in chunk.iter().enumerate() {
            xml.push_str(&format!(
                "<id><uid>{}</uid><idType>Digital Currency Address - {asset}</idType><idNumber>{a}</idNumber></id>",
                k + 2
            ));
        }
        xml.push_str("</idList></sdnEntry>\n");
    }
    xml.push_str("</sdnList>\n");
    let sdn = tmp.path().join("sdn.xml");
    std::fs::write(&sdn, &xml).unwrap();

    // The plain lists give the valid addresses; the XML must give the same ones.
    let lists = tmp.path().join("lists").to_string_lossy().into_owned();
    for f in ["ofac-sanctioned-XBT.txt", "ofac-sanctioned-ETH.txt"] {
        let p = fx.join("labels").join(f);
        let (ok, _, err) = run(&[
            "labels",
            "import",
            "--warehouse",
            &lists,
            "--category",
            "sanctioned",
            "--skip-invalid",
            p.to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
    }
    let wh = tmp.path().join("wh").to_string_lossy().into_owned();
    let (ok, out, err) = run(&[
        "labels",
        "import",
        "--warehouse",
        &wh,
        "--skip-invalid",
        sdn.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("new"), "{out}");
    let addrs = "SELECT chain, address FROM labels ORDER BY 1, 2";
    let want = sql(&lists, addrs);
    // Not two empty sets: most of the fixtures' 587 addresses are valid.
    assert!(want.lines().count() > 500, "{want}");
    assert!(want.contains("btc,") && want.contains("eth,"), "{want}");
    assert_eq!(sql(&wh, addrs), want, "the same sanctioned addresses");
    let meta = sql(
        &wh,
        "SELECT DISTINCT category, label, source FROM labels WHERE label = 'ENTITY 0 & PARTNERS'",
    );
    assert!(
        meta.contains("sanctioned,ENTITY 0 & PARTNERS,OFAC SDN 30000 (CYBER2)"),
        "{meta}"
    );
    assert_eq!(
        sql(
            &wh,
            "SELECT count(*) FROM labels WHERE address LIKE 'T%' OR address LIKE '46hy%'"
        )
        .trim(),
        "count(*)\n0",
        "TRON and Monero are left out"
    );

    // A truncated list is an error naming the file and line; nothing is written.
    let cut = tmp.path().join("cut.xml");
    std::fs::write(&cut, &xml[..xml.len() * 2 / 3]).unwrap();
    let fresh = tmp.path().join("wh2").to_string_lossy().into_owned();
    let (ok, _, err) = run(&[
        "labels",
        "import",
        "--warehouse",
        &fresh,
        cut.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("cut.xml:"), "{err}");
}
