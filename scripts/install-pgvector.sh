#!/bin/sh
# Install the pgvector extension into the local PostgreSQL server (the `vector` type that collections'
# embeddings use). Debian bookworm packages no postgresql-15-pgvector, so this builds Debian's own pgvector
# source package (from trixie's deb-src) against the server's headers. Idempotent: does nothing when the
# extension is already installed. Needs root (apt-get, and writing into PostgreSQL's lib and share folders).
set -eu
PG_CONFIG=${PG_CONFIG:-$(ls -d /usr/lib/postgresql/*/bin/pg_config 2>/dev/null | sort -V | tail -n 1)}
if [ -z "$PG_CONFIG" ]; then
    echo "install-pgvector: no PostgreSQL server found (pg_config)" >&2
    exit 1
fi
SHARE=$("$PG_CONFIG" --sharedir)
if [ -f "$SHARE/extension/vector.control" ]; then
    exit 0
fi
MAJOR=$("$PG_CONFIG" --version | sed -E 's/[^0-9]*([0-9]+).*/\1/')
echo "Installing pgvector for PostgreSQL $MAJOR (Debian's source package, built here; about 30 seconds)..."
if apt-get install -y -qq "postgresql-$MAJOR-pgvector" >/dev/null 2>&1; then
    exit 0
fi
LIST=/etc/apt/sources.list.d/chatsite-pgvector-src.list
[ -f "$LIST" ] || echo "deb-src http://deb.debian.org/debian trixie main" > "$LIST"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-server-dev-$MAJOR" dpkg-dev >/dev/null
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
apt-get source --download-only -qq pgvector 2>/dev/null
tar xzf pgvector_*.orig.tar.gz
cd pgvector-*/
# OPTFLAGS="": no -march=native, so the library runs on any x86-64 machine the data folder moves to.
make -s OPTFLAGS="" PG_CONFIG="$PG_CONFIG" >/dev/null
make -s install PG_CONFIG="$PG_CONFIG" >/dev/null
echo "pgvector installed into $SHARE/extension"
