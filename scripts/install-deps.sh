#!/bin/sh
# Installs the Debian 12 packages hsmd needs to build, test and benchmark.
# Idempotent: only missing packages are installed, so `make` stays fast on a
# machine that already has them.  Must run as root when anything is missing.
set -eu

PKGS="build-essential cmake pkg-config openssl
libssl-dev libsqlite3-dev libjansson-dev libcmocka-dev
sqlite3 awscli python3 python3-boto3 python3-botocore python3-pytest python3-requests
python3-jwt python3-jwcrypto python3-cryptography python3-pykcs11 python3-prometheus-client opensc
python3-yaml
softhsm2 libp11-kit-dev gnuplot-nox wrk"
# OpenSSL's pkcs11 engine (libp11): the PKCS#11 module's tests use it as nginx or openssl req would.
PKGS="$PKGS libengine-pkcs11-openssl"
# ssh-agent and ssh-keygen: the module's tests load it as OpenSSH does.
PKGS="$PKGS openssh-client"
# p11tool: GnuTLS's PKCS#11 client, a third stack the module's tests load it in.
PKGS="$PKGS gnutls-bin"
# Java (OpenJDK 17): its SunPKCS11 key store is a client of the module in the tests.
PKGS="$PKGS openjdk-17-jdk-headless"
# valgrind: memcheck checks that the Shamir code never branches or indexes on secrets.
PKGS="$PKGS valgrind"
# The PostgreSQL store backend: libpq to build, a server for its tests (tests/support/pg-server.sh).
PKGS="$PKGS postgresql libpq-dev"
# clang and its runtime (libFuzzer, sanitizers): `make fuzz`.
PKGS="$PKGS clang libclang-rt-14-dev"
# ip (network namespaces): a cluster test cuts a node off the network.
PKGS="$PKGS iproute2"
# pyflakes: `make lint` checks the Python tests and tools for unused names and typos.
PKGS="$PKGS python3-pyflakes"

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "hsmd needs these Debian packages:$missing" >&2
	echo "run 'sudo make deps' (or install them with apt-get) and try again" >&2
	exit 1
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
