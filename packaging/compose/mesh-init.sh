#!/bin/sh
# Wires a three-node echorelay mesh: creates each node's key (once; it stays
# in the node's volume, so a re-run keeps every identity) and writes each
# node's config with the other two as peers, pubkeys included, so graph and
# echo state replicate only among these three keys.
#
# docker-compose.yml runs it as the one-shot service `keys` before the
# nodes start. Outside Docker, set NODES_DIR, CONFIG_DIR and URL_a/URL_b/URL_c
# (the test suite does).
set -eu

NODES_DIR=${NODES_DIR:-/nodes}
CONFIG_DIR=${CONFIG_DIR:-/config}
NODES="a b c"

mkdir -p "$CONFIG_DIR"
for node in $NODES; do
    echorelay node-key --data "$NODES_DIR/$node" > "$CONFIG_DIR/$node.pub"
done

url_of() {
    eval "printf '%s' \"\${URL_$1:-ws://$1:7777}\""
}

for node in $NODES; do
    config="$CONFIG_DIR/$node.toml"
    {
        echo "# Written by mesh-init.sh for node $node; re-run it to rewrite."
        echo "[info]"
        echo "name = \"echorelay mesh node $node\""
        for peer in $NODES; do
            [ "$peer" = "$node" ] && continue
            echo ""
            echo "[[peers]]"
            echo "url = \"$(url_of "$peer")\""
            echo "pubkey = \"$(cat "$CONFIG_DIR/$peer.pub")\""
            echo "dir = \"both\""
            echo "live = true"
            echo "interval_secs = 60"
        done
    } > "$config.tmp"
    mv "$config.tmp" "$config"
done

# The nodes run as the image's user (uid 10001); the keys were made as root.
if [ "$(id -u)" = 0 ]; then
    for node in $NODES; do
        chown -R 10001:10001 "$NODES_DIR/$node"
    done
fi
echo "mesh wired:"
for node in $NODES; do
    echo "  $node $(cat "$CONFIG_DIR/$node.pub")"
done
