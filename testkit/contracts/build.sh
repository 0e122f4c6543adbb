#!/usr/bin/env bash
# Recompiles Ferret.sol, Router.sol, Pool.sol and Mixer.sol into the checked-in .bin files (creation bytecode, hex) with
# solcjs 0.8.37 (npm package solc@0.8.37), optimiser on.
set -euo pipefail
cd "$(dirname "$0")"
SOLCJS=${SOLCJS:-solcjs}
out=$(mktemp -d)
"$SOLCJS" --bin --optimize --optimize-runs 200 -o "$out" Ferret.sol
for c in FerretUSD FerretNFT Splitter; do
  cp "$out"/Ferret_sol_"$c".bin "$c".bin
done
"$SOLCJS" --bin --optimize --optimize-runs 200 -o "$out" Router.sol
cp "$out"/Router_sol_Router.bin Router.bin
"$SOLCJS" --bin --optimize --optimize-runs 200 -o "$out" Pool.sol
cp "$out"/Pool_sol_Pool.bin Pool.bin
"$SOLCJS" --bin --optimize --optimize-runs 200 -o "$out" Mixer.sol
cp "$out"/Mixer_sol_Mixer.bin Mixer.bin
rm -rf "$out"
