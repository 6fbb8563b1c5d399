/*
 * config_value.c - the table of settings and the parsing and checking of
 * each value.  Ranges keep every value within what the code using it can
 * handle, and say so in the error.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/net.h"
#include "common/util.h"
#include "server/config_internal.h"
#include "server/server.h"

#define FIELD(f) offsetof(hsm_config, f), sizeof(((hsm_config *)0)->f)
#define KIB ((uint64_t)1 << 10)
#define MIB ((uint64_t)1 << 20)
#define GIB ((uint64_t)1 << 30)
#define DAY 86400U

/* Shown in --help in this order. */
const key_def hsm_config_keys[] = {
    {"listen", K_ADDR, FIELD(listen), 0, 0, NULL, "ADDR",
     "address:port to serve; IPv6 as [addr]:port (default 127.0.0.1:8443, --dev 127.0.0.1:8080)"},
    {"tls_cert", K_FILE, FIELD(tls_cert), 0, 0, "", "FILE", "PEM certificate chain for TLS"},
    {"tls_key", K_FILE, FIELD(tls_key), 0, 0, "", "FILE",
     "PEM private key of tls_cert, unencrypted, mode 0600"},
    {"tls_client_ca", K_FILE, FIELD(tls_client_ca), 0, 0, "", "FILE",
     "PEM CA certificates that client certificates must chain to"},
    {"tls_client_auth", K_AUTH, FIELD(tls_client_auth), 0, 0, "none", "MODE",
     "client certificates: none, optional or required"},
    {"tls_watch", K_BOOL, FIELD(tls_watch), 0, 0, "true", "BOOL",
     "load tls_cert, tls_key and tls_client_ca again when one of them changes (looked at "
     "every scheduler_interval_seconds); SIGHUP loads them in any case; neither restarts or seals "
     "the node"},
    {"allow_plaintext_loopback", K_BOOL, FIELD(allow_plaintext_loopback), 0, 0, "false", "BOOL",
     "allow plain HTTP without --dev when listen is a loopback address"},
    {"workers", K_U32, FIELD(workers), 0, HSM_HTTP_MAX_WORKERS, "0", "N",
     "HTTP worker threads; 0 means one per CPU"},
    {"max_body_bytes", K_SIZE, FIELD(max_body_bytes), KIB, 64 * MIB, "1M", "SIZE",
     "largest request body"},
    {"max_header_bytes", K_SIZE, FIELD(max_header_bytes), KIB, MIB, "16K", "SIZE",
     "largest request line plus headers"},
    {"read_timeout_ms", K_U32, FIELD(read_timeout_ms), 100, 600000, "10000", "MS",
     "time a client has to send a whole request"},
    {"idle_timeout_ms", K_U32, FIELD(idle_timeout_ms), 100, 3600000, "60000", "MS",
     "keep-alive connection left without a request"},
    {"write_timeout_ms", K_U32, FIELD(write_timeout_ms), 100, 600000, "10000", "MS",
     "client not reading its response"},
    {"shutdown_grace_ms", K_U32, FIELD(shutdown_grace_ms), 0, 600000, "10000", "MS",
     "time requests in progress get to finish at shutdown"},
    {"max_connections", K_U32, FIELD(max_connections), 1, 1000000, "10000", "N",
     "open client connections; more are closed at once"},
    {"max_connections_per_source", K_U32, FIELD(max_connections_per_source), 0, 1000000, "1000",
     "N",
     "open connections one client address (IPv4, or IPv6 /64) may hold; more are closed at "
     "once; 0: no bound; a SIGHUP applies a change at once"},
    {"proxy_protocol_from", K_NETS, FIELD(proxy_protocol_from), 0, 0, "", "CIDRS",
     "load balancers (comma-separated addresses or CIDR ranges) whose connections begin with a "
     "PROXY protocol header (v1 or v2) naming the client; required from them, believed from no "
     "one else; empty: none"},
    {"batch_scheduling", K_BOOL, FIELD(batch_scheduling), 0, 0, "true", "BOOL",
     "HTTP workers and audit writer under SCHED_BATCH: more throughput on busy cores; "
     "false favours latency beside other busy programs"},
    {"data_dir", K_DIR, FIELD(data_dir), 0, 0, NULL, "DIR",
     "database and state (default /var/lib/hsmd, --dev ./dev-data)"},
    {"store", K_STORE, FIELD(store), 0, 0, "", "URI",
     "a store several nodes share: postgresql://USER@HOST[:PORT]/DB[?OPTIONS] (libpq; give the "
     "password in ~/.pgpass or PGPASSFILE, not in the URI); empty: SQLite in DATA_DIR"},
    {"store_cache_ms", K_U32, FIELD(store_cache_ms), 0, 3600000, NULL, "MS",
     "how long cached key metadata and aliases are trusted before the store is read again; "
     "0: until this node changes them (default 0 with SQLite, 1000 with a shared store)"},
    {"key_usage_flush_ms", K_U32, FIELD(key_usage_flush_ms), 100, 3600000, "1000", "MS",
     "how often the last uses of keys (GetKeyLastUsage) are written to the store; longer "
     "writes less where requests spread over many keys, and other nodes see uses later"},
    {"scheduler_interval_seconds", K_U32, FIELD(scheduler_interval_seconds), 1, 60, "5", "S",
     "how often each node makes its round: probes the store (/readyz), drops the material of "
     "keys changed on other nodes, looks at the TLS files (tls_watch) and asks for the store's "
     "leadership, whose holder then runs due rotations, deletions and backups"},
    {"leader_lease_seconds", K_U32, FIELD(leader_lease_seconds), 3, 3600, "30", "S",
     "with a shared store, a leader that makes no round for this long (stopped, hung) loses "
     "the scheduled work to the next node to ask; at least 3 x scheduler_interval_seconds"},
    {"outbox_adopt_after_seconds", K_U32, FIELD(outbox_adopt_after_seconds), 0, 366 * DAY,
     "3600", "S",
     "with a shared store, the leader records in its own trail the audit outbox rows of a "
     "node that is not running (its id free) once the oldest is this old, then deletes them: "
     "changes a node that never comes back committed without a record; 0: never; else at "
     "least 60"},
    {"region", K_REGION, FIELD(region), 0, 0, "us-east-1", "NAME", "region named in key ARNs"},
    {"account_id", K_ACCOUNT, FIELD(account_id), 0, 0, "111122223333", "ID",
     "12-digit account named in key ARNs"},
    {"node_id", K_NODE, FIELD(node_id), 0, 0, NULL, "NAME", "this node's name (default: host name)"},
    {"audit_dir", K_DIR, FIELD(audit_dir), 0, 0, NULL, "DIR",
     "audit log directory (default DATA_DIR/audit)"},
    {"backup_dir", K_DIR, FIELD(backup_dir), 0, 0, NULL, "DIR",
     "encrypted backups of the store (default DATA_DIR/backups)"},
    {"backup_interval_seconds", K_U32, FIELD(backup_interval_seconds), 0, 366 * DAY, "86400", "S",
     "time between scheduled backups; 0 turns them off"},
    {"backup_retention_days", K_U32, FIELD(backup_retention_days), 1, 36500, "90", "DAYS",
     "delete backups older than this (the seven newest are always kept)"},
    {"backup_copy_dir", K_DIR_OPT, FIELD(backup_copy_dir), 0, 0, "", "DIR",
     "also copy each backup here: another disk, or a mount in another region"},
    {"audit_fsync_ms", K_U32, FIELD(audit_fsync_ms), 1, 10000, "10", "MS",
     "longest wait to group audit records into one fsync (at most audit_fsync_max_lag_ms)"},
    {"audit_fsync_max_lag_ms", K_U32, FIELD(audit_fsync_max_lag_ms), 1, 60000, "50", "MS",
     "acknowledge records during an fsync until the oldest not durable is this old"},
    {"audit_ack_durable", K_BOOL, FIELD(audit_ack_durable), 0, 0, "false", "BOOL",
     "answer a request only once its audit record is fsynced (no loss on power cut)"},
    /* At most 512 MiB: audit verify reads files of up to 1 GiB, and a file ends a
     * batch of records past this size. */
    {"audit_rotate_bytes", K_SIZE, FIELD(audit_rotate_bytes), MIB, 512 * MIB, "256M", "SIZE",
     "start a new audit file past this size (at most 512M: audit verify reads up to 1G)"},
    {"audit_rotate_seconds", K_U32, FIELD(audit_rotate_seconds), 60, 366 * DAY, "86400", "S",
     "start a new audit file past this age"},
    {"audit_retention_days", K_U32, FIELD(audit_retention_days), 1, 36500, "2557", "DAYS",
     "keep audit files this long"},
    {"audit_copy_dir", K_DIR_OPT, FIELD(audit_copy_dir), 0, 0, "", "DIR",
     "also copy each closed audit file to DIR/NODE_ID (another disk, a mount in another "
     "region); retention deletes no file not copied"},
    {"audit_checkpoint_seconds", K_U32, FIELD(audit_checkpoint_seconds), 1, DAY, "60", "S",
     "interval between signed audit checkpoints"},
    {"audit_syslog", K_BOOL, FIELD(audit_syslog), 0, 0, "false", "BOOL",
     "also send audit records to syslog"},
    {"jwt_default_lifetime_seconds", K_U32, FIELD(jwt_default_lifetime_seconds), 1, 30 * DAY,
     "900", "S", "lifetime of a signed token when the request names none"},
    {"jwt_max_lifetime_seconds", K_U32, FIELD(jwt_max_lifetime_seconds), 1, 30 * DAY, "86400", "S",
     "longest token lifetime a request may ask for"},
    {"jwt_clock_skew_seconds", K_U32, FIELD(jwt_clock_skew_seconds), 1, 3600, "60", "S",
     "verifiers' clock skew that the JWKS grace period for retired key versions allows"},
    {"sigv4_skew_seconds", K_U32, FIELD(sigv4_skew_seconds), 1, 3600, "300", "S",
     "clock difference allowed on SigV4-signed requests"},
    {"approval_quorum", K_U32, FIELD(approval_quorum), 0, HSM_APPROVERS_MAX, "0", "M",
     "custodians (users with the custodian role) who must approve each request of "
     "approval_operations; 0 turns approvals off"},
    {"approval_operations", K_OPS, FIELD(approval_operations), 0, 0, HSM_APPROVAL_OPS_DEFAULT,
     "OPS", "the operations that wait for approval when approval_quorum is above 0"},
    {"approval_ttl_seconds", K_U32, FIELD(approval_ttl_seconds), 60, 30 * DAY, "86400", "S",
     "how long an approval request stays open for custodians and for the approved retry"},
    {"unseal_timeout_seconds", K_U32, FIELD(unseal_timeout_seconds), 1, DAY, "900", "S",
     "an unseal left without a new share for this long is abandoned and the shares given "
     "wiped (within a scheduler round); the custodians start it again"},
    {"lockout_threshold", K_U32, FIELD(lockout_threshold), 1, 1000, "5", "N",
     "failed authentications before a principal is locked; a SIGHUP applies a change at once"},
    {"refusal_record_rate", K_U32, FIELD(refusal_record_rate), 0, 1000000, "10", "N",
     "audit records a second for requests from one source refused before authentication "
     "(ten seconds' worth at once); beyond, they are counted in a summary record; 0: no bound; "
     "a SIGHUP applies a change at once"},
    {"refusal_record_rate_total", K_U32, FIELD(refusal_record_rate_total), 0, 1000000, "500",
     "N", "the same over all sources together; 0: no bound but the per-source one; a SIGHUP "
     "applies a change at once"},
    {"secure_heap_bytes", K_SIZE, FIELD(secure_heap_bytes), MIB, GIB, "64M", "SIZE",
     "locked memory for key material (a power of two)"},
    {"log_level", K_LOG, FIELD(log_level), 0, 0, "info", "LEVEL",
     "debug, info, warn or error; a SIGHUP applies a change at once"},
    {"dev", K_BOOL, FIELD(dev), 0, 0, "false", "BOOL",
     "development mode: local defaults, dev credentials, TLS optional"},
};
const size_t hsm_config_n_keys = sizeof(hsm_config_keys) / sizeof(hsm_config_keys[0]);

const key_def *hsm_config_find(const char *name)
{
	for (size_t i = 0; i < hsm_config_n_keys; i++)
		if (strcmp(hsm_config_keys[i].name, name) == 0)
			return &hsm_config_keys[i];
	return NULL;
}

void hsm_config_where(const hsm_config *cfg, const key_def *k, const setting *s, char *out,
                      size_t cap)
{
	switch (s->src) {
	case SRC_FLAG: {
		size_t o = (size_t)snprintf(out, cap, "--");
		for (const char *p = k->name; *p != '\0' && o + 1 < cap; p++)
			out[o++] = *p == '_' ? '-' : *p;
		out[o < cap ? o : cap - 1] = '\0';
		break;
	}
	case SRC_ENV: {
		size_t o = (size_t)snprintf(out, cap, "HSM_");
		for (const char *p = k->name; *p != '\0' && o + 1 < cap; p++)
			out[o++] = (char)toupper((unsigned char)*p);
		out[o < cap ? o : cap - 1] = '\0';
		break;
	}
	case SRC_FILE:
		snprintf(out, cap, "%s:%u", cfg->config_file, s->line);
		break;
	case SRC_DEFAULT:
	default:
		snprintf(out, cap, "default");
		break;
	}
}

static hsm_result parse_bool(const char *t, bool *out)
{
	static const char *const yes[] = {"true", "yes", "on", "1"};
	static const char *const no[] = {"false", "no", "off", "0"};
	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(t, yes[i]) == 0 || strcasecmp(t, no[i]) == 0) {
			*out = strcasecmp(t, yes[i]) == 0;
			return HSM_SUCCESS;
		}
	}
	return HSM_FAIL(HSM_ERR_VALIDATION, "expected true or false");
}

/* "64", "16K", "16KiB", "1 M", "2G": binary multiples. */
static hsm_result parse_size(const char *t, uint64_t *out)
{
	static const struct {
		const char *suffix;
		unsigned shift;
	} units[] = {{"", 0},    {"b", 0},   {"k", 10},  {"kb", 10}, {"kib", 10}, {"m", 20},
	             {"mb", 20}, {"mib", 20}, {"g", 30}, {"gb", 30}, {"gib", 30}};
	size_t digits = strspn(t, "0123456789");
	HSM_ENSURE(digits > 0 && digits <= 12, HSM_ERR_VALIDATION, "expected a size such as 512K or 2M");
	char num[16];
	memcpy(num, t, digits);
	num[digits] = '\0';
	int64_t v = 0;
	HSM_GUARD(hsm_parse_i64(num, 0, INT64_MAX, &v));
	const char *suffix = t + digits;
	while (*suffix == ' ')
		suffix++;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcasecmp(suffix, units[i].suffix) == 0) {
			HSM_ENSURE((uint64_t)v <= (UINT64_MAX >> units[i].shift), HSM_ERR_VALIDATION,
			           "size too large");
			*out = (uint64_t)v << units[i].shift;
			return HSM_SUCCESS;
		}
	}
	return HSM_FAIL(HSM_ERR_VALIDATION, "unknown size unit '%.8s' (use K, M or G)", suffix);
}

static hsm_result parse_enum(const char *t, const char *const *names, size_t n, int *out)
{
	for (size_t i = 0; i < n; i++) {
		if (strcasecmp(t, names[i]) == 0) {
			*out = (int)i;
			return HSM_SUCCESS;
		}
	}
	return HSM_FAIL(HSM_ERR_VALIDATION, "not one of the allowed values");
}

static bool all_of(const char *t, const char *allowed)
{
	return t[0] != '\0' && strspn(t, allowed) == strlen(t);
}

#define LOWER "abcdefghijklmnopqrstuvwxyz"
#define UPPER "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#define DIGITS "0123456789"

/* Checks text as a name: region (us-east-1), account (12 digits) or node. */
static hsm_result check_name(key_type type, const char *t)
{
	size_t n = strlen(t);
	if (type == K_ACCOUNT)
		HSM_ENSURE(n == 12 && all_of(t, DIGITS), HSM_ERR_VALIDATION, "expected 12 digits");
	if (type == K_REGION)
		HSM_ENSURE(hsm_region_name_valid(t), HSM_ERR_VALIDATION,
		           "expected a region name such as us-east-1");
	/* A node's name is also a directory's (audit_copy_dir/NODE_ID): never "." or "..". */
	if (type == K_NODE)
		HSM_ENSURE(n < HSM_CONFIG_NAME_MAX && all_of(t, LOWER UPPER DIGITS "._-") &&
		               strcmp(t, ".") != 0 && strcmp(t, "..") != 0,
		           HSM_ERR_VALIDATION,
		           "expected at most 63 letters, digits, '.', '_' or '-', other than . or ..");
	return HSM_SUCCESS;
}

static hsm_result check_file(const char *t)
{
	if (t[0] == '\0')
		return HSM_SUCCESS;
	struct stat st;
	HSM_ENSURE(stat(t, &st) == 0, HSM_ERR_VALIDATION, "no such file");
	HSM_ENSURE(S_ISREG(st.st_mode), HSM_ERR_VALIDATION, "not a regular file");
	HSM_ENSURE(access(t, R_OK) == 0, HSM_ERR_VALIDATION, "not readable by this user");
	return HSM_SUCCESS;
}

static void store_u64(hsm_config *cfg, const key_def *k, uint64_t v)
{
	uint8_t *field = (uint8_t *)cfg + k->off;
	if (k->size == sizeof(uint64_t)) {
		memcpy(field, &v, sizeof(v));
	} else {
		uint32_t v32 = (uint32_t)v; /* ranges of 32-bit fields fit */
		memcpy(field, &v32, sizeof(v32));
	}
}

/* store_u64's reverse. */
static uint64_t load_u64(const hsm_config *cfg, const key_def *k)
{
	const uint8_t *field = (const uint8_t *)cfg + k->off;
	if (k->size == sizeof(uint64_t)) {
		uint64_t v;
		memcpy(&v, field, sizeof(v));
		return v;
	}
	uint32_t v32;
	memcpy(&v32, field, sizeof(v32));
	return v32;
}

/* The names of K_AUTH's and K_LOG's values, by their enum value: parsed and shown. */
static const char *const auth_names[] = {"none", "optional", "required"};
static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* Parses t into k's field of cfg. */
static hsm_result parse_into(hsm_config *cfg, const key_def *k, const char *t)
{
	uint8_t *field = (uint8_t *)cfg + k->off;
	uint64_t u = 0;
	int e = 0;
	bool b = false;
	struct sockaddr_storage ss;
	socklen_t len;
	switch (k->type) {
	case K_BOOL:
		HSM_GUARD(parse_bool(t, &b));
		memcpy(field, &b, sizeof(b));
		return HSM_SUCCESS;
	case K_U32:
	case K_SIZE:
		if (k->type == K_SIZE) {
			HSM_GUARD(parse_size(t, &u));
		} else {
			int64_t v = 0;
			HSM_ENSURE(all_of(t, DIGITS) && hsm_ok(hsm_parse_i64(t, 0, INT64_MAX, &v)),
			           HSM_ERR_VALIDATION, "expected a whole number");
			u = (uint64_t)v;
		}
		HSM_ENSURE(u >= k->min && u <= k->max, HSM_ERR_VALIDATION,
		           "out of range [%llu, %llu]", (unsigned long long)k->min,
		           (unsigned long long)k->max);
		store_u64(cfg, k, u);
		return HSM_SUCCESS;
	case K_AUTH:
	case K_LOG:
		HSM_GUARD(parse_enum(t, k->type == K_AUTH ? auth_names : level_names,
		                     k->type == K_AUTH ? 3 : 4, &e));
		if (k->type == K_AUTH)
			*(hsm_http_client_auth *)(void *)field = (hsm_http_client_auth)e;
		else
			*(hsm_log_level *)(void *)field = (hsm_log_level)e;
		return HSM_SUCCESS;
	case K_ADDR:
		HSM_GUARD(hsm_http_parse_addr(t, &ss, &len));
		break;
	case K_FILE:
		HSM_GUARD(check_file(t));
		break;
	case K_DIR:
		HSM_ENSURE(t[0] != '\0', HSM_ERR_VALIDATION, "a directory is required");
		break;
	case K_DIR_OPT:
		break;
	case K_STORE:
		HSM_ENSURE(t[0] == '\0' || hsm_str_has_prefix(t, "postgresql://") ||
		               hsm_str_has_prefix(t, "postgres://"),
		           HSM_ERR_VALIDATION, "expected a postgresql:// URI, or nothing for SQLite");
		break;
	case K_REGION:
	case K_ACCOUNT:
	case K_NODE:
		HSM_GUARD(check_name(k->type, t));
		break;
	case K_NETS: {
		hsm_net nets[HSM_HTTP_PROXY_NETS_MAX];
		size_t n = 0;
		HSM_GUARD(hsm_net_list_parse(t, nets, HSM_HTTP_PROXY_NETS_MAX, &n));
		break;
	}
	case K_OPS: {
		uint64_t kms_ops;
		uint32_t admin_ops;
		HSM_GUARD(hsm_server_approval_ops(t, &kms_ops, &admin_ops));
		break;
	}
	}
	return hsm_strcpy((char *)field, k->size, t);
}

hsm_result hsm_config_set_value(hsm_config *cfg, const key_def *k, const setting *s,
                                const char *text)
{
	hsm_result r = parse_into(cfg, k, text);
	if (hsm_ok(r))
		return r;
	char why[HSM_ERRMSG_MAX], where[HSM_CONFIG_PATH_MAX + 16];
	snprintf(why, sizeof(why), "%s", hsm_last_message());
	hsm_config_where(cfg, k, s, where, sizeof(where));
	if (k->type == K_STORE) /* the value may hold a password */
		return HSM_FAIL(HSM_ERR_VALIDATION, "%s (from %s): %s", k->name, where, why);
	return HSM_FAIL(HSM_ERR_VALIDATION, "%s = '%.64s' (from %s): %s", k->name, text, where, why);
}

void hsm_config_value_text(const hsm_config *cfg, const char *name, char *out, size_t cap)
{
	const key_def *k = hsm_config_find(name);
	HSM_ASSERT(k != NULL && cap > 0);
	const uint8_t *field = (const uint8_t *)cfg + k->off;
	switch (k->type) {
	case K_BOOL:
		snprintf(out, cap, "%s", *(const bool *)(const void *)field ? "true" : "false");
		return;
	case K_U32:
	case K_SIZE:
		snprintf(out, cap, "%llu", (unsigned long long)load_u64(cfg, k));
		return;
	case K_AUTH:
		snprintf(out, cap, "%s", auth_names[*(const hsm_http_client_auth *)(const void *)field]);
		return;
	case K_LOG:
		snprintf(out, cap, "%s", level_names[*(const hsm_log_level *)(const void *)field]);
		return;
	case K_STORE: /* a URI's password stays out of every message */
		hsm_location_shown((const char *)field, out, cap);
		return;
	default:
		snprintf(out, cap, "%s", (const char *)field);
		return;
	}
}
