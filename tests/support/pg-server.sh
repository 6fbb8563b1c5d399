#!/bin/sh
# pg-server.sh - a throwaway PostgreSQL 15 cluster for tests.
#
#   pg-server.sh start DIR   creates DIR (which must not exist or be empty),
#                            initializes a cluster in it, starts it on
#                            127.0.0.1 at a free port (its unix socket inside
#                            DIR too) and prints one line: a connection URI for
#                            a superuser with a password (scram-sha-256),
#                              postgresql://hsmd:PASSWORD@127.0.0.1:PORT/postgres
#                            The same line is kept in DIR/uri.
#   pg-server.sh stop DIR    stops the cluster (if running) and removes DIR.
#   pg-server.sh halt DIR    stops the cluster, keeping DIR (an outage)
#   pg-server.sh resume DIR  starts it again on the same port (the same URI)
#   pg-server.sh standby DIR PRIMARY_DIR
#                            a streaming-replication standby of the running
#                            cluster in PRIMARY_DIR (pg_basebackup), on a port
#                            of its own; prints its URI (same role, password)
#   pg-server.sh promote DIR makes that standby the primary
#
# PostgreSQL refuses to run as root, so under uid 0 the server programs run as
# the `postgres` system user (Debian's package creates it) and DIR belongs to
# it; DIR's parent directories must then be searchable by that user.
# Durability is off (fsync=off): the cluster lives as long as a test run.
# PG_BINDIR overrides where initdb and pg_ctl are found.
set -eu

usage() {
	echo "usage: $0 start|stop|halt|resume|promote DIR, or standby DIR PRIMARY_DIR" >&2
	exit 2
}
[ $# -ge 2 ] || usage
cmd=$1
dir=$2
case $dir in
/*) ;;
*) dir="$(pwd)/$dir" ;;
esac

bindir=${PG_BINDIR:-}
if [ -z "$bindir" ]; then
	for d in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
		if [ -x "$d/initdb" ]; then
			bindir=$d
			break
		fi
	done
fi

# Runs a server program as the user PostgreSQL accepts.
as_pg() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# A TCP port nobody listens on right now (the server may still lose a race
# for it, so start retries with another one).
free_port() {
	/usr/bin/python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

start() {
	if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ] || [ ! -x "$bindir/pg_ctl" ]; then
		echo "pg-server.sh: PostgreSQL server programs not found (install postgresql: scripts/install-deps.sh)" >&2
		exit 1
	fi
	if [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
		echo "pg-server.sh: $dir exists and is not empty" >&2
		exit 1
	fi
	mkdir -p "$dir"
	chmod 0700 "$dir"
	if [ "$(id -u)" -eq 0 ]; then
		getent passwd postgres >/dev/null || {
			echo "pg-server.sh: running as root needs the postgres system user" >&2
			exit 1
		}
		chown postgres: "$dir"
		as_pg test -x "$dir" || {
			echo "pg-server.sh: the postgres user cannot reach $dir (a parent directory is not searchable)" >&2
			exit 1
		}
	fi
	# Hex only, so the password needs no escaping inside a URI.
	pass=$(openssl rand -hex 16)
	umask 077
	printf '%s\n' "$pass" >"$dir/pwfile"
	[ "$(id -u)" -ne 0 ] || chown postgres: "$dir/pwfile"
	as_pg "$bindir/initdb" -D "$dir/data" -U hsmd --pwfile="$dir/pwfile" -E UTF8 \
		--locale=C --auth-host=scram-sha-256 --auth-local=scram-sha-256 \
		>"$dir/initdb.log" 2>&1 || {
		echo "pg-server.sh: initdb failed:" >&2
		cat "$dir/initdb.log" >&2
		exit 1
	}
	rm -f "$dir/pwfile"
	# Unix sockets are limited to 107 bytes of path; beyond that, TCP only.
	sockdir="$dir"
	[ ${#dir} -le 80 ] || sockdir=""
	tries=0
	while :; do
		port=$(free_port)
		cat >>"$dir/data/postgresql.conf" <<-EOF
			listen_addresses = '127.0.0.1'
			port = $port
			unix_socket_directories = '$sockdir'
			password_encryption = 'scram-sha-256'
			fsync = off
			full_page_writes = off
			max_connections = 200
			shared_buffers = 16MB
			log_min_messages = warning
		EOF
		if as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
			>/dev/null 2>&1; then
			break
		fi
		tries=$((tries + 1))
		if [ $tries -ge 5 ]; then
			echo "pg-server.sh: the server did not start:" >&2
			tail -n 20 "$dir/server.log" >&2 || true
			exit 1
		fi
	done
	uri="postgresql://hsmd:$pass@127.0.0.1:$port/postgres"
	printf '%s\n' "$uri" >"$dir/uri"
	printf '%s\n' "$uri"
}

stop() {
	if [ -f "$dir/data/PG_VERSION" ] && [ -n "$bindir" ]; then
		as_pg "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
	fi
	rm -rf "$dir"
}

standby() {
	primary=$1
	case $primary in
	/*) ;;
	*) primary="$(pwd)/$primary" ;;
	esac
	puri=$(cat "$primary/uri")
	pport=${puri##*:}
	pport=${pport%%/*}
	pass=${puri#postgresql://hsmd:}
	pass=${pass%%@*}
	if [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
		echo "pg-server.sh: $dir exists and is not empty" >&2
		exit 1
	fi
	mkdir -p "$dir"
	chmod 0700 "$dir"
	[ "$(id -u)" -ne 0 ] || chown postgres: "$dir"
	as_pg env PGPASSWORD="$pass" "$bindir/pg_basebackup" -h 127.0.0.1 -p "$pport" -U hsmd \
		-D "$dir/data" -R -X stream >"$dir/basebackup.log" 2>&1 || {
		echo "pg-server.sh: pg_basebackup failed:" >&2
		cat "$dir/basebackup.log" >&2
		exit 1
	}
	sockdir="$dir"
	[ ${#dir} -le 80 ] || sockdir=""
	port=$(free_port)
	cat >>"$dir/data/postgresql.conf" <<-EOF
		port = $port
		unix_socket_directories = '$sockdir'
	EOF
	as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null 2>&1 || {
		echo "pg-server.sh: the standby did not start:" >&2
		tail -n 20 "$dir/server.log" >&2 || true
		exit 1
	}
	uri="postgresql://hsmd:$pass@127.0.0.1:$port/postgres"
	printf '%s\n' "$uri" >"$dir/uri"
	printf '%s\n' "$uri"
}

promote() {
	as_pg "$bindir/pg_ctl" -D "$dir/data" -w -t 60 promote >/dev/null
}

halt() {
	as_pg "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
}

resume() {
	as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
}

case $cmd in
start) start ;;
stop) stop ;;
standby)
	[ $# -eq 3 ] || usage
	standby "$3"
	;;
promote) promote ;;
halt) halt ;;
resume) resume ;;
*) usage ;;
esac
