/*
 * module.c - the PKCS#11 entry points other than objects and signatures
 * (p11.h): initialization, slot and token, sessions, login, mechanisms,
 * random numbers, and the functions this token does not offer.
 *
 * Configuration comes from the environment at C_Initialize:
 *   HSM_PKCS11_ENDPOINT  hsmd's URL, or several separated by commas (tried in order);
 *                        each http(s)://host[:port], at most 1023 bytes in all
 *   HSM_PKCS11_CA_FILE   PEM bundle that verifies hsmd's TLS certificate
 *   HSM_PKCS11_CLIENT_CERT, HSM_PKCS11_CLIENT_KEY  a PEM client certificate and its
 *                        key, for a node with tls_client_auth (the key needs the
 *                        certificate); each of the three a file this process can
 *                        read, its path at most 1023 bytes
 *   HSM_PKCS11_REGION    the SigV4 region (default: AWS_REGION, AWS_DEFAULT_REGION,
 *                        else us-east-1); a region name as hsmd's configuration takes
 *   HSM_PKCS11_KEYS      the keys the token shows, by key id, key ARN or alias,
 *                        separated by commas (default: every key the user sees);
 *                        UTF-8, at most 4095 bytes, each name at most 2048
 *   HSM_PKCS11_TIMEOUT   seconds a call waits for hsmd's answer (1-3600, default 30)
 * Empty is as unset.  A setting the module cannot use as it is makes
 * C_Initialize fail with CKR_GENERAL_ERROR, and a line on stderr says which
 * and why: none is ever cut short to fit.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>

#include "common/encoding.h"
#include "common/json_read.h"
#include "pkcs11/p11.h"

p11_module p11;
pthread_mutex_t p11_lock = PTHREAD_MUTEX_INITIALIZER;

/* Outside p11 (which C_Initialize wipes): serials never repeat in this process. */
static uint64_t last_serial;

uint64_t p11_serial(void)
{
	return ++last_serial;
}

/*
 * fork() while another thread holds the module's lock would leave it locked
 * for good in the child, whose C_Initialize would then wait forever: the
 * lock is taken around fork, so the child gets it free.  (glibc drops these
 * handlers when the module is unloaded.)
 */
static void fork_prepare(void)
{
	pthread_mutex_lock(&p11_lock);
}

static void fork_done(void)
{
	pthread_mutex_unlock(&p11_lock);
}

static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void fork_handlers(void)
{
	(void)pthread_atfork(fork_prepare, fork_done, fork_done);
}

/* Blank-padded, not terminated: PKCS#11's fixed-size strings. */
static void pad(unsigned char *dst, size_t n, const char *src)
{
	size_t len = strlen(src);
	memset(dst, ' ', n);
	memcpy(dst, src, len < n ? len : n);
}

static void wipe_credentials(void)
{
	OPENSSL_cleanse(p11.conn.secret, sizeof(p11.conn.secret));
	OPENSSL_cleanse(p11.conn.akid, sizeof(p11.conn.akid));
	p11.logged_in = false;
}

/* ---- the connection pool ------------------------------------------------------------------ */

/* Points c at the settings and credentials in cs, which must outlive its use. */
static void client_point(hsm_client *c, const p11_conn *cs)
{
	c->endpoints = cs->endpoints;
	c->ca_file = cs->ca_file[0] ? cs->ca_file : NULL;
	c->cert_file = cs->client_cert[0] ? cs->client_cert : NULL;
	c->key_file = cs->client_key[0] ? cs->client_key : NULL;
	c->region = cs->region;
	c->timeout_s = cs->timeout_s;
	/* Always the PIN's credentials (empty before login): never the environment's. */
	c->akid = cs->akid;
	c->secret = cs->secret;
}

static hsm_client *client_acquire(void)
{
	hsm_client *c = p11.pool_n > 0 ? p11.pool[--p11.pool_n] : calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	client_point(c, &p11.conn);
	return c;
}

static void client_release(hsm_client *c, uint64_t gen)
{
	if (c == NULL)
		return;
	if (p11.initialized && gen == p11.gen && p11.pool_n < P11_POOL_MAX) {
		p11.pool[p11.pool_n++] = c;
		return;
	}
	hsm_client_close(c);
	free(c);
}

void p11_pool_drain(void)
{
	while (p11.pool_n > 0) {
		hsm_client *c = p11.pool[--p11.pool_n];
		hsm_client_close(c);
		free(c);
	}
	p11.gen = p11_serial();
}

static void close_session(p11_session *s)
{
	p11_op_reset(&s->sign);
	p11_op_reset(&s->verify);
	p11_op_reset(&s->encrypt);
	p11_op_reset(&s->decrypt);
	p11_op_reset(&s->digest);
	free(s->find.handles);
	memset(s, 0, sizeof(*s));
}

/*
 * The settings' checks: each tells whether a (non-empty) value is one the
 * module can use as it is, or writes to why what is wrong with it, as words
 * that follow the variable's name and quote none of the value, which may
 * carry a password (an endpoint's user:password@) or key names.
 */
typedef bool setting_check(const char *v, char *why, size_t cap);

/* The endpoints: as the client calls them, or C_Initialize would take a list no call can use. */
static bool endpoints_check(const char *v, char *why, size_t cap)
{
	return hsm_client_endpoints_usable(v, why, cap);
}

/*
 * A file the client reads at each connection (CA bundle, certificate, key):
 * one that is not there, or not readable, would fail every call as a broken
 * connection, with no word of which setting.  Its path is no secret.
 */
static bool readable(const char *path)
{
	/* Opened, as the client will open it: with the effective ids (which access() does not
	 * test) and through any seccomp filter that refuses faccessat2 (which AT_EACCESS uses). */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0)
		return false;
	close(fd);
	return true;
}

static bool file_check(const char *v, char *why, size_t cap)
{
	struct stat st;
	const char *problem = stat(v, &st) != 0      ? "names no file this process can reach"
	                      : !S_ISREG(st.st_mode) ? "names something other than a file"
	                      : !readable(v)         ? "names a file this process cannot read"
	                                             : NULL;
	if (problem != NULL)
		snprintf(why, cap, "%s", problem);
	return problem == NULL;
}

/* The region the requests are signed for must be one hsmd's configuration can name. */
static bool region_check(const char *v, char *why, size_t cap)
{
	if (hsm_region_name_valid(v))
		return true;
	snprintf(why, cap,
	         "is not a region name such as us-east-1 (at most %d lowercase letters, digits "
	         "and '-')",
	         HSM_REGION_NAME_MAX);
	return false;
}

/*
 * HSM_PKCS11_KEYS: names separated by commas, each sent to hsmd as a KeyId
 * at every listing.  JSON carries only UTF-8, and a name cut short would
 * name another key.
 */
_Static_assert(P11_KEY_NAME_MAX == 2048, "the message's number");

static bool keys_check(const char *v, char *why, size_t cap)
{
	if (!hsm_utf8_valid(v, strlen(v))) {
		snprintf(why, cap, "is not UTF-8 text (key ids, key ARNs or aliases, separated by "
		                   "commas)");
		return false;
	}
	for (const char *p = v; *p != '\0';) {
		size_t len = strcspn(p, ",");
		if (len > P11_KEY_NAME_MAX) {
			snprintf(why, cap, "names a key with more than 2048 bytes");
			return false;
		}
		p += len + (p[len] == ',');
	}
	return true;
}

static bool timeout_check(const char *v, char *why, size_t cap)
{
	char *end = NULL;
	long secs = strtol(v, &end, 10);
	if (*end != '\0' || secs < 1 || secs > 3600) {
		snprintf(why, cap, "must be a number of seconds from 1 to 3600");
		return false;
	}
	return true;
}

/*
 * Copies the setting name (unset or empty: leaves dst empty) into dst, of
 * cap bytes, when the whole of it fits and check (if any) takes it; else
 * writes to why the line that says which setting is wrong, and how.
 */
static bool take_setting(const char *name, char *dst, size_t cap, setting_check *check, char *why,
                         size_t why_cap)
{
	const char *v = getenv(name);
	dst[0] = '\0';
	if (v == NULL || *v == '\0')
		return true;
	char problem[200];
	size_t n = strlen(v);
	if (n >= cap)
		snprintf(problem, sizeof(problem), "is longer than %zu bytes", cap - 1);
	if (n < cap && (check == NULL || check(v, problem, sizeof(problem)))) {
		memcpy(dst, v, n + 1);
		return true;
	}
	snprintf(why, why_cap, "%s %s", name, problem);
	return false;
}

/* The variable that gives the region: the module's own, else those the AWS tools read. */
static const char *region_variable(void)
{
	static const char *const names[] = {"HSM_PKCS11_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const char *v = getenv(names[i]);
		if (v != NULL && *v != '\0')
			return names[i];
	}
	return NULL;
}

/*
 * Reads the environment's settings into p11 (C_Initialize, the lock held):
 * true, or false with why saying which setting the module cannot use as it
 * is.  None is ever cut short: an endpoint or a file path cut short would
 * name another host or file than the one configured.
 */
static bool read_settings(char *why, size_t cap)
{
	p11_conn *c = &p11.conn;
	const char *region = region_variable();
	char timeout[16];
	const struct {
		const char *name;
		char *dst;
		size_t cap;
		setting_check *check;
	} settings[] = {
	    {"HSM_PKCS11_ENDPOINT", c->endpoints, sizeof(c->endpoints), endpoints_check},
	    {"HSM_PKCS11_CA_FILE", c->ca_file, sizeof(c->ca_file), file_check},
	    {"HSM_PKCS11_CLIENT_CERT", c->client_cert, sizeof(c->client_cert), file_check},
	    {"HSM_PKCS11_CLIENT_KEY", c->client_key, sizeof(c->client_key), file_check},
	    {region != NULL ? region : "HSM_PKCS11_REGION", c->region, sizeof(c->region),
	     region_check},
	    {"HSM_PKCS11_KEYS", p11.keys, sizeof(p11.keys), keys_check},
	    {"HSM_PKCS11_TIMEOUT", timeout, sizeof(timeout), timeout_check},
	};
	for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++)
		if (!take_setting(settings[i].name, settings[i].dst, settings[i].cap, settings[i].check,
		                  why, cap))
			return false;
	/* A key alone is no client certificate: the connection would go without one. */
	if (c->client_key[0] != '\0' && c->client_cert[0] == '\0') {
		snprintf(why, cap, "HSM_PKCS11_CLIENT_KEY is set without HSM_PKCS11_CLIENT_CERT");
		return false;
	}
	if (c->region[0] == '\0')
		snprintf(c->region, sizeof(c->region), "%s", "us-east-1");
	c->timeout_s = timeout[0] != '\0' ? (int)strtol(timeout, NULL, 10) : 30;
	return true;
}

CK_RV C_Initialize(CK_VOID_PTR init_args)
{
	if (init_args != NULL) {
		CK_C_INITIALIZE_ARGS *a = init_args;
		if (a->pReserved != NULL)
			return CKR_ARGUMENTS_BAD;
		bool some = a->CreateMutex || a->DestroyMutex || a->LockMutex || a->UnlockMutex;
		bool all = a->CreateMutex && a->DestroyMutex && a->LockMutex && a->UnlockMutex;
		if (some && !all)
			return CKR_ARGUMENTS_BAD;
		/* Application mutexes without OS locking: this module only has OS locking. */
		if (all && !(a->flags & CKF_OS_LOCKING_OK))
			return CKR_CANT_LOCK;
	}
	(void)pthread_once(&fork_once, fork_handlers);
	pthread_mutex_lock(&p11_lock);
	if (p11.initialized && p11.pid == getpid()) {
		pthread_mutex_unlock(&p11_lock);
		return CKR_CRYPTOKI_ALREADY_INITIALIZED;
	}
	/* A child of fork() starts afresh; the parent's connection and sessions stay the parent's. */
	if (p11.initialized) {
		for (size_t i = 0; i < P11_MAX_SESSIONS; i++)
			close_session(&p11.sessions[i]);
		p11_objects_clear();
		wipe_credentials();
		p11_pool_drain();
	}
	memset(&p11, 0, sizeof(p11));
	p11.pid = getpid();
	char wrong[512];
	if (!read_settings(wrong, sizeof(wrong))) {
		memset(&p11, 0, sizeof(p11));
		pthread_mutex_unlock(&p11_lock);
		/* Not the caller's arguments: the environment.  Said on stderr, as the code cannot. */
		fprintf(stderr, "libhsm_pkcs11: %s\n", wrong);
		return CKR_GENERAL_ERROR;
	}
	p11.next_handle = 1;
	p11.gen = p11_serial(); /* clients out before a C_Finalize are not kept */
	p11.initialized = true;
	pthread_mutex_unlock(&p11_lock);
	return CKR_OK;
}

CK_RV C_Finalize(CK_VOID_PTR reserved)
{
	ENTER();
	if (reserved != NULL)
		LEAVE(CKR_ARGUMENTS_BAD);
	for (size_t i = 0; i < P11_MAX_SESSIONS; i++)
		close_session(&p11.sessions[i]);
	p11_objects_clear();
	wipe_credentials();
	p11_pool_drain();
	p11.initialized = false;
	LEAVE(CKR_OK);
}

CK_RV C_GetInfo(CK_INFO_PTR info)
{
	ENTER();
	if (info == NULL)
		LEAVE(CKR_ARGUMENTS_BAD);
	memset(info, 0, sizeof(*info));
	info->cryptokiVersion.major = 2;
	info->cryptokiVersion.minor = 40;
	pad(info->manufacturerID, sizeof(info->manufacturerID), "hsmd");
	pad(info->libraryDescription, sizeof(info->libraryDescription), "hsmd PKCS#11 module");
	info->libraryVersion.major = 0;
	info->libraryVersion.minor = 1;
	LEAVE(CKR_OK);
}

/* ---- slot and token --------------------------------------------------------------------- */

CK_RV C_GetSlotList(CK_BBOOL token_present, CK_SLOT_ID_PTR list, CK_ULONG_PTR count)
{
	(void)token_present;
	ENTER();
	if (count == NULL)
		LEAVE(CKR_ARGUMENTS_BAD);
	CK_RV rv = CKR_OK;
	if (list != NULL && *count < 1)
		rv = CKR_BUFFER_TOO_SMALL;
	else if (list != NULL)
		list[0] = P11_SLOT;
	*count = 1;
	LEAVE(rv);
}

CK_RV C_GetSlotInfo(CK_SLOT_ID slot, CK_SLOT_INFO_PTR info)
{
	ENTER();
	if (info == NULL)
		LEAVE(CKR_ARGUMENTS_BAD);
	if (slot != P11_SLOT)
		LEAVE(CKR_SLOT_ID_INVALID);
	memset(info, 0, sizeof(*info));
	char desc[160];
	/* Applications show it: the endpoints only as logs may show a location. */
	char shown[121];
	hsm_location_shown(p11.conn.endpoints, shown, sizeof(shown));
	snprintf(desc, sizeof(desc), "hsmd at %s", p11.conn.endpoints[0] ? shown : "(no endpoint)");
	pad(info->slotDescription, sizeof(info->slotDescription), desc);
	pad(info->manufacturerID, sizeof(info->manufacturerID), "hsmd");
	info->flags = CKF_TOKEN_PRESENT | CKF_REMOVABLE_DEVICE | CKF_HW_SLOT;
	LEAVE(CKR_OK);
}

CK_RV C_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info)
{
	ENTER();
	if (info == NULL)
		LEAVE(CKR_ARGUMENTS_BAD);
	if (slot != P11_SLOT)
		LEAVE(CKR_SLOT_ID_INVALID);
	memset(info, 0, sizeof(*info));
	pad(info->label, sizeof(info->label), "hsmd");
	pad(info->manufacturerID, sizeof(info->manufacturerID), "hsmd");
	pad(info->model, sizeof(info->model), "hsmd KMS");
	pad(info->serialNumber, sizeof(info->serialNumber), "1");
	info->flags = CKF_RNG | CKF_LOGIN_REQUIRED | CKF_USER_PIN_INITIALIZED |
	              CKF_TOKEN_INITIALIZED;
	info->ulMaxSessionCount = P11_MAX_SESSIONS;
	info->ulMaxRwSessionCount = P11_MAX_SESSIONS;
	CK_ULONG n = 0, rw = 0;
	for (size_t i = 0; i < P11_MAX_SESSIONS; i++) {
		n += p11.sessions[i].open;
		rw += p11.sessions[i].open && (p11.sessions[i].flags & CKF_RW_SESSION) != 0;
	}
	info->ulSessionCount = n;
	info->ulRwSessionCount = rw;
	info->ulMinPinLen = 3;
	info->ulMaxPinLen = 255;
	info->ulTotalPublicMemory = info->ulFreePublicMemory = CK_UNAVAILABLE_INFORMATION;
	info->ulTotalPrivateMemory = info->ulFreePrivateMemory = CK_UNAVAILABLE_INFORMATION;
	info->hardwareVersion.major = 0;
	info->firmwareVersion.major = 0;
	memset(info->utcTime, ' ', sizeof(info->utcTime));
	LEAVE(CKR_OK);
}

CK_RV C_GetMechanismList(CK_SLOT_ID slot, CK_MECHANISM_TYPE_PTR list, CK_ULONG_PTR count)
{
	ENTER();
	if (count == NULL)
		LEAVE(CKR_ARGUMENTS_BAD);
	if (slot != P11_SLOT)
		LEAVE(CKR_SLOT_ID_INVALID);
	CK_RV rv = CKR_OK;
	if (list != NULL && *count < p11_n_mechs)
		rv = CKR_BUFFER_TOO_SMALL;
	else if (list != NULL)
		for (size_t i = 0; i < p11_n_mechs; i++)
			list[i] = p11_mechs[i].type;
	*count = p11_n_mechs;
	LEAVE(rv);
}

CK_RV C_GetMechanismInfo(CK_SLOT_ID slot, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR info)
{
	ENTER();
	if (info == NULL)
		LEAVE(CKR_ARGUMENTS_BAD);
	if (slot != P11_SLOT)
		LEAVE(CKR_SLOT_ID_INVALID);
	const p11_mech *m = p11_mech_find(type);
	if (m == NULL)
		LEAVE(CKR_MECHANISM_INVALID);
	info->ulMinKeySize = m->min_bits;
	info->ulMaxKeySize = m->max_bits;
	info->flags = m->flags;
	LEAVE(CKR_OK);
}

/* ---- sessions ------------------------------------------------------------------------------ */

/*
 * A session handle is its slot (1 to P11_MAX_SESSIONS, the low 9 bits) and
 * 22 bits of the serial it was opened with: a handle closed is not valid again
 * when its slot is reused, so a stale handle (a double close, a late cleanup
 * in one of the libraries sharing the module) reaches no other session.
 * Handles stay below 2^31 for applications that keep them in an int.
 */
#define SLOT_BITS 9
_Static_assert(P11_MAX_SESSIONS < (1 << SLOT_BITS), "a session's slot fits its bits");

p11_session *p11_session_get(CK_SESSION_HANDLE h)
{
	CK_SESSION_HANDLE slot = h & ((1u << SLOT_BITS) - 1);
	if (slot == 0 || slot > P11_MAX_SESSIONS)
		return NULL;
	p11_session *s = &p11.sessions[slot - 1];
	return s->open && s->handle == h ? s : NULL;
}

CK_RV p11_user_session(CK_SESSION_HANDLE h)
{
	return p11_session_get(h) == NULL ? CKR_SESSION_HANDLE_INVALID
	       : !p11.logged_in          ? CKR_USER_NOT_LOGGED_IN
	                                 : CKR_OK;
}

CK_RV C_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify,
                    CK_SESSION_HANDLE_PTR session)
{
	(void)app;
	(void)notify;
	ENTER();
	if (session == NULL)
		LEAVE(CKR_ARGUMENTS_BAD);
	if (slot != P11_SLOT)
		LEAVE(CKR_SLOT_ID_INVALID);
	if (!(flags & CKF_SERIAL_SESSION))
		LEAVE(CKR_SESSION_PARALLEL_NOT_SUPPORTED);
	for (size_t i = 0; i < P11_MAX_SESSIONS; i++) {
		if (!p11.sessions[i].open) {
			memset(&p11.sessions[i], 0, sizeof(p11.sessions[i]));
			p11.sessions[i].open = true;
			p11.sessions[i].serial = p11_serial();
			p11.sessions[i].handle =
			    (CK_SESSION_HANDLE)((p11.sessions[i].serial & 0x3fffff) << SLOT_BITS) | (i + 1);
			p11.sessions[i].flags = flags;
			*session = p11.sessions[i].handle;
			LEAVE(CKR_OK);
		}
	}
	LEAVE(CKR_SESSION_COUNT);
}

/* What C_Logout does: the login ends for every session of the token. */
static void end_login(void)
{
	for (size_t i = 0; i < P11_MAX_SESSIONS; i++) {
		p11_op_reset(&p11.sessions[i].sign);
		p11_op_reset(&p11.sessions[i].verify);
		p11_op_reset(&p11.sessions[i].encrypt);
		p11_op_reset(&p11.sessions[i].decrypt);
		/* A search under way ends too: it could hand out handles the logout took away. */
		free(p11.sessions[i].find.handles);
		memset(&p11.sessions[i].find, 0, sizeof(p11.sessions[i].find));
	}
	wipe_credentials();
	p11_pool_drain();
	p11_objects_logout();
}

static bool any_session_open(void)
{
	for (size_t i = 0; i < P11_MAX_SESSIONS; i++)
		if (p11.sessions[i].open)
			return true;
	return false;
}

CK_RV C_CloseSession(CK_SESSION_HANDLE h)
{
	ENTER();
	p11_session *s = p11_session_get(h);
	if (s == NULL)
		LEAVE(CKR_SESSION_HANDLE_INVALID);
	close_session(s);
	p11_objects_drop_session(h);
	/* The login ends with the last session (PKCS#11 v2.40 5.6), as at C_Logout: the
	 * private objects go, and a new session finds none of the others before login. */
	if (!any_session_open() && p11.logged_in)
		end_login();
	LEAVE(CKR_OK);
}

CK_RV C_CloseAllSessions(CK_SLOT_ID slot)
{
	ENTER();
	if (slot != P11_SLOT)
		LEAVE(CKR_SLOT_ID_INVALID);
	for (size_t i = 0; i < P11_MAX_SESSIONS; i++) {
		CK_SESSION_HANDLE h = p11.sessions[i].handle;
		close_session(&p11.sessions[i]);
		if (h != CK_INVALID_HANDLE)
			p11_objects_drop_session(h);
	}
	end_login(); /* as C_CloseSession of the last session */
	LEAVE(CKR_OK);
}

CK_RV C_GetSessionInfo(CK_SESSION_HANDLE h, CK_SESSION_INFO_PTR info)
{
	ENTER_SESSION(h);
	if (info == NULL)
		LEAVE(CKR_ARGUMENTS_BAD);
	const p11_session *s = p11_session_get(h);
	bool rw = (s->flags & CKF_RW_SESSION) != 0;
	info->slotID = P11_SLOT;
	info->state = p11.logged_in ? (rw ? CKS_RW_USER_FUNCTIONS : CKS_RO_USER_FUNCTIONS)
	                            : (rw ? CKS_RW_PUBLIC_SESSION : CKS_RO_PUBLIC_SESSION);
	info->flags = s->flags;
	info->ulDeviceError = 0;
	LEAVE(CKR_OK);
}

/* ---- calling hsmd ---------------------------------------------------------------------------- */

/*
 * Request and answer bytes can be secrets (plaintexts, shared secrets,
 * random bytes for keys), and the module runs inside the application: what
 * it frees unwiped may end up in the application's core dumps.  jansson
 * frees its strings and buffers unwiped, and a library must not change the
 * process's jansson allocator.  So a request is serialized straight into
 * secure memory (json_dumpb: no growing buffers), its string values are
 * wiped before jansson frees them, and an answer's secret member is taken
 * out of the answer's text, in secure memory, and blanked there, before
 * jansson parses the rest.
 */
static void cleanse_strings(json_t *j)
{
	const char *k;
	json_t *v;
	size_t i;
	if (json_is_string(j)) {
		OPENSSL_cleanse((void *)(uintptr_t)json_string_value(j), json_string_length(j));
	} else if (json_is_object(j)) {
		json_object_foreach(j, k, v)
			cleanse_strings(v);
	} else if (json_is_array(j)) {
		json_array_foreach(j, i, v)
			cleanse_strings(v);
	}
}

/*
 * The JSON text of body, in secure memory; body is wiped and consumed.  A
 * NULL body is one jansson did not make: memory ran out (malloc's ENOMEM,
 * as p11_ossl_ran_out reads it), or it refused a value, a string that is
 * not UTF-8, which JSON cannot carry: CKR_ARGUMENTS_BAD, as hsmd answers a
 * request it cannot read (ValidationException), not CKR_HOST_MEMORY.
 */
static CK_RV dump_body(json_t *body, hsm_buf *text)
{
	if (body == NULL)
		return errno == ENOMEM ? CKR_HOST_MEMORY : CKR_ARGUMENTS_BAD;
	size_t n = json_dumpb(body, NULL, 0, JSON_COMPACT);
	bool ok = n > 0 && hsm_ok(hsm_buf_reserve(text, n + 1)) &&
	          json_dumpb(body, (char *)text->data, n, JSON_COMPACT) == n;
	if (ok) {
		text->len = n;
		text->data[n] = '\0';
	}
	cleanse_strings(body);
	json_decref(body);
	return ok ? CKR_OK : CKR_HOST_MEMORY; /* a body jansson made fails only for memory */
}

/*
 * Takes the base64 string member `name` out of hsmd's answer text (compact
 * JSON, a flat object: the pattern can only be that member's key, as any
 * quote inside a string value is escaped), decodes it into out and blanks
 * it in place.  False when it is not there as expected.
 */
static bool take_secret(hsm_buf *resp, const char *name, hsm_buf *out)
{
	char key[64];
	int kn = snprintf(key, sizeof(key), "\"%s\":\"", name);
	if (kn <= 0 || (size_t)kn >= sizeof(key) || resp->len < (size_t)kn)
		return false;
	uint8_t *p = resp->data, *end = resp->data + resp->len;
	uint8_t *at = memmem(p, resp->len, key, (size_t)kn);
	if (at == NULL)
		return false;
	uint8_t *v = at + kn, *q = v;
	while (q < end && *q != '"' && *q != '\\')
		q++;
	if (q == end || *q != '"' ||
	    hsm_failed(hsm_b64_decode(out, (const char *)v, (size_t)(q - v), HSM_ERR_VALIDATION)))
		return false;
	memset(v, 'A', (size_t)(q - v)); /* still valid base64 and JSON: jansson reads no secret */
	return true;
}

static CK_RV call(const char *target, json_t *body, json_t **out, bool unlock,
                  const char *secret, hsm_buf *secret_out)
{
	*out = NULL;
	hsm_buf body_text;
	hsm_buf_init_secure(&body_text);
	CK_RV dumped = dump_body(body, &body_text);
	if (dumped != CKR_OK) {
		hsm_buf_free(&body_text);
		return dumped;
	}
	const char *text = (const char *)body_text.data;
	if (p11.conn.endpoints[0] == '\0') {
		hsm_buf_free(&body_text);
		return CKR_DEVICE_ERROR; /* HSM_PKCS11_ENDPOINT is not set */
	}
	if (p11.conn.akid[0] == '\0' || p11.conn.secret[0] == '\0') {
		hsm_buf_free(&body_text);
		return CKR_USER_NOT_LOGGED_IN; /* a logout in another thread wiped them */
	}
	hsm_client *c = client_acquire();
	if (c == NULL) {
		hsm_buf_free(&body_text);
		return CKR_HOST_MEMORY;
	}
	uint64_t gen = p11.gen;
	/*
	 * Without the lock, a logout may wipe the credentials and C_Initialize
	 * rewrite the settings while the request is made: it uses copies.
	 */
	p11_conn own;
	if (unlock) {
		own = p11.conn;
		client_point(c, &own);
	}
	hsm_buf resp;
	hsm_buf_init_secure(&resp);
	int status = 0;
	if (unlock)
		pthread_mutex_unlock(&p11_lock);
	hsm_result r = hsm_client_call(c, target, text, true, &status, &resp);
	if (unlock) {
		pthread_mutex_lock(&p11_lock);
		OPENSSL_cleanse(&own, sizeof(own)); /* c points at p11's again when next acquired */
	}
	client_release(c, gen);
	hsm_buf_free(&body_text); /* secure: wiped */
	CK_RV rv = CKR_OK;
	bool took = hsm_ok(r) && status == 200 && secret != NULL && take_secret(&resp, secret, secret_out);
	json_t *j = NULL;
	unsigned line, col;
	/* j stays NULL when the answer is not JSON or memory ran out (read says which). */
	hsm_result read = hsm_ok(r) ? hsm_json_read(resp.data, resp.len, &j, &line, &col) : r;
	if (j != NULL && status == 200 && secret != NULL && !took) {
		/* Not where hsmd puts it: read it the ordinary way, and wipe jansson's copy. */
		rv = p11_b64_member(j, secret, secret_out);
		cleanse_strings(json_object_get(j, secret));
	}
	if (hsm_failed(r)) {
		rv = r.err == HSM_ERR_NOMEM ? CKR_HOST_MEMORY : CKR_DEVICE_ERROR;
	} else if (j == NULL) {
		rv = read.err == HSM_ERR_NOMEM ? CKR_HOST_MEMORY : CKR_DEVICE_ERROR; /* else not JSON */
	} else if (rv != CKR_OK) {
		json_decref(j);
		j = NULL;
	} else if (status != 200) {
		const char *type = json_string_value(json_object_get(j, "__type"));
		hsm_err err = type != NULL ? hsm_err_from_kms_name(type) : HSM_ERR_INTERNAL;
		if (err == HSM_ERR_ACCESS_DENIED && status == 403) /* hsmd's answer to a locked user */
			err = HSM_ERR_PRINCIPAL_LOCKED;
		rv = type != NULL ? hsm_err_ckr(err) : CKR_DEVICE_ERROR;
		/*
		 * The PIN's credentials stopped working after login (the access key was
		 * revoked, the user disabled or locked): CKR_PIN_INCORRECT and
		 * CKR_PIN_LOCKED are C_Login's answers, so the login ends here, and the
		 * call, like any that needs one, is CKR_USER_NOT_LOGGED_IN.  Only the
		 * login the request was made under: another thread may have logged out
		 * and in again with other credentials while the answer was on its way.
		 */
		if (p11.logged_in && (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LOCKED)) {
			if (p11.gen == gen)
				end_login();
			rv = CKR_USER_NOT_LOGGED_IN;
		}
		json_decref(j);
		j = NULL;
	}
	hsm_buf_free(&resp);
	*out = j;
	return rv;
}

CK_RV p11_call(const char *target, json_t *body, json_t **out)
{
	return call(target, body, out, false, NULL, NULL);
}

p11_ticket p11_ticket_of(CK_SESSION_HANDLE h, const p11_op *op)
{
	const p11_session *s = p11_session_get(h);
	p11_ticket t = {h, s != NULL ? s->serial : 0, op != NULL ? op->serial : 0};
	return t;
}

bool p11_ticket_live(const p11_ticket *t)
{
	const p11_session *s = p11_session_get(t->h);
	return p11.initialized && s != NULL && s->serial == t->session;
}

CK_RV p11_call_session_secret(const p11_ticket *t, const char *target, json_t *body,
                              json_t **out, const char *secret, hsm_buf *secret_out)
{
	CK_RV rv = call(target, body, out, true, secret, secret_out);
	if (p11_ticket_live(t))
		return rv;
	json_decref(*out);
	*out = NULL;
	if (secret_out != NULL)
		hsm_buf_clear(secret_out);
	return p11.initialized ? CKR_SESSION_CLOSED : CKR_CRYPTOKI_NOT_INITIALIZED;
}

CK_RV p11_call_session(const p11_ticket *t, const char *target, json_t *body, json_t **out)
{
	return p11_call_session_secret(t, target, body, out, NULL, NULL);
}

void p11_op_end(p11_op *op, const p11_ticket *t)
{
	/* Serials are never 0 nor repeated: a closed session's zeroed op, or a new op, differs. */
	if (op->serial == t->op)
		p11_op_reset(op);
}

CK_RV p11_b64_member(json_t *o, const char *name, hsm_buf *out)
{
	const char *v = json_string_value(json_object_get(o, name));
	if (v == NULL)
		return CKR_DEVICE_ERROR;
	return p11_rv_of(hsm_b64_decode(out, v, strlen(v), HSM_ERR_VALIDATION), CKR_DEVICE_ERROR);
}

CK_RV p11_rv_of(hsm_result r, CK_RV otherwise)
{
	return hsm_ok(r) ? CKR_OK : r.err == HSM_ERR_NOMEM ? CKR_HOST_MEMORY : otherwise;
}

bool p11_set(json_t *body, const char *name, json_t *v)
{
	return v != NULL && json_object_set_new(body, name, v) == 0;
}

void p11_ossl_watch(void)
{
	ERR_set_mark();
	errno = 0;
}

bool p11_ossl_ran_out(void)
{
	/* Not OpenSSL's queue: what is on it below the mark is not the module's to read. */
	bool ran_out = errno == ENOMEM;
	(void)ERR_pop_to_mark();
	return ran_out;
}

/* ---- login ------------------------------------------------------------------------------------- */

CK_RV C_Login(CK_SESSION_HANDLE h, CK_USER_TYPE type, CK_UTF8CHAR_PTR pin, CK_ULONG pin_len)
{
	ENTER_SESSION(h);
	/* No key needs a login of its own (CKA_ALWAYS_AUTHENTICATE is false everywhere): */
	if (type == CKU_CONTEXT_SPECIFIC)
		LEAVE(CKR_OPERATION_NOT_INITIALIZED);
	if (type != CKU_USER && type != CKU_SO)
		LEAVE(CKR_USER_TYPE_INVALID);
	if (p11.logged_in)
		LEAVE(type == CKU_SO ? CKR_USER_ANOTHER_ALREADY_LOGGED_IN : CKR_USER_ALREADY_LOGGED_IN);
	if (type == CKU_SO) {
		/* The token has no security officer (hsmd's crypto-officers administer it), so no
		 * SO PIN is right; the session rule comes first, as for a token with one. */
		for (size_t i = 0; i < P11_MAX_SESSIONS; i++)
			if (p11.sessions[i].open && !(p11.sessions[i].flags & CKF_RW_SESSION))
				LEAVE(CKR_SESSION_READ_ONLY_EXISTS);
		LEAVE(CKR_PIN_INCORRECT);
	}
	if (pin == NULL)
		LEAVE(CKR_ARGUMENTS_BAD);
	const char *colon = memchr(pin, ':', pin_len);
	size_t id_len = colon ? (size_t)(colon - (const char *)pin) : 0;
	size_t secret_len = colon ? pin_len - id_len - 1 : 0;
	if (colon == NULL || id_len == 0 || id_len >= sizeof(p11.conn.akid) || secret_len == 0 ||
	    secret_len >= sizeof(p11.conn.secret))
		LEAVE(CKR_PIN_INCORRECT);
	memcpy(p11.conn.akid, pin, id_len);
	p11.conn.akid[id_len] = '\0';
	memcpy(p11.conn.secret, colon + 1, secret_len);
	p11.conn.secret[secret_len] = '\0';
	/* The credentials are good when hsmd accepts a request signed with them. */
	json_t *out = NULL;
	CK_RV rv = p11_call("TrentService.ListKeys", json_pack("{s:i}", "Limit", 1), &out);
	json_decref(out);
	if (rv != CKR_OK) {
		wipe_credentials();
		LEAVE(rv);
	}
	p11.logged_in = true;
	rv = p11_objects_refresh();
	/* A listing that failed part-way ends the login as a logout does: no half-listed
	 * private or secret key objects, no pooled connection, stay behind. */
	if (rv != CKR_OK)
		end_login();
	LEAVE(rv);
}

CK_RV C_Logout(CK_SESSION_HANDLE h)
{
	ENTER_SESSION(h);
	if (!p11.logged_in)
		LEAVE(CKR_USER_NOT_LOGGED_IN);
	end_login();
	LEAVE(CKR_OK);
}

/* ---- random ------------------------------------------------------------------------------------- */

CK_RV C_GenerateRandom(CK_SESSION_HANDLE h, CK_BYTE_PTR out, CK_ULONG len)
{
	ENTER_SESSION(h);
	if (out == NULL && len > 0)
		LEAVE(CKR_ARGUMENTS_BAD);
	CK_RV rv = p11_user_session(h);
	p11_ticket t = p11_ticket_of(h, NULL);
	uint64_t gen = p11.gen;
	for (CK_ULONG done = 0; done < len && rv == CKR_OK;) {
		CK_ULONG n = len - done > 1024 ? 1024 : len - done; /* GenerateRandom's bound */
		/* The lock is let go during each chunk: a logout in another thread ends the call. */
		if (!p11.logged_in || p11.gen != gen) {
			rv = CKR_USER_NOT_LOGGED_IN;
			break;
		}
		json_t *ans = NULL;
		hsm_buf bytes;
		hsm_buf_init_secure(&bytes);
		rv = p11_call_session_secret(&t, "TrentService.GenerateRandom",
		                             json_pack("{s:i}", "NumberOfBytes", (int)n), &ans,
		                             "Plaintext", &bytes);
		if (rv == CKR_OK && bytes.len != n)
			rv = CKR_DEVICE_ERROR;
		if (rv == CKR_OK)
			memcpy(out + done, bytes.data, n);
		done += n;
		hsm_buf_free(&bytes);
		json_decref(ans);
	}
	LEAVE(rv);
}

CK_RV C_SeedRandom(CK_SESSION_HANDLE h, CK_BYTE_PTR seed, CK_ULONG len)
{
	(void)seed;
	(void)len;
	ENTER_SESSION(h);
	LEAVE(CKR_RANDOM_SEED_NOT_SUPPORTED);
}

/* ---- what this token does not do ---------------------------------------------------------------
 * Keys are made and managed in hsmd (C_GenerateKey and C_GenerateKeyPair
 * make one); its users, PINs and the token itself are hsmd's administration.
 * Encryption is RSA-OAEP (in one part) and AES-GCM (crypt.c).  These
 * functions answer as the others do first: CKR_CRYPTOKI_NOT_INITIALIZED,
 * then CKR_SESSION_HANDLE_INVALID for those that take a session (p11.h), or
 * CKR_SLOT_ID_INVALID for one that takes a slot.
 */

/*
 * PKCS#11 v2.40 5.5: C_WaitForSlotEvent takes no slot id; it writes the slot
 * of an event into *slot, and pReserved must be NULL.  The one slot holds its
 * token for good, so no event ever comes: a poll (CKF_DONT_BLOCK) answers
 * CKR_NO_EVENT; a wait would hold the application's thread for nothing until
 * C_Finalize, so the blocking form is not offered (CKR_FUNCTION_NOT_SUPPORTED,
 * which the function may return: callers then poll, or give up on events).
 */
CK_RV C_WaitForSlotEvent(CK_FLAGS flags, CK_SLOT_ID_PTR slot, CK_VOID_PTR reserved)
{
	ENTER();
	if (slot == NULL || reserved != NULL)
		LEAVE(CKR_ARGUMENTS_BAD);
	LEAVE((flags & CKF_DONT_BLOCK) != 0 ? CKR_NO_EVENT : CKR_FUNCTION_NOT_SUPPORTED);
}

/* A slot that is not the module's is CKR_SLOT_ID_INVALID, as in every function taking one. */
CK_RV C_InitToken(CK_SLOT_ID slot, CK_UTF8CHAR_PTR pin, CK_ULONG pin_len, CK_UTF8CHAR_PTR label)
{
	(void)pin;
	(void)pin_len;
	(void)label;
	ENTER();
	if (slot != P11_SLOT)
		LEAVE(CKR_SLOT_ID_INVALID);
	LEAVE(CKR_FUNCTION_NOT_SUPPORTED);
}

/* A function of a session (its first parameter, a) that the token does not offer. */
#define NOT_SUPPORTED(name, params, uses)       \
	CK_RV name params                          \
	{                                          \
		uses;                                  \
		ENTER_SESSION(a);                      \
		LEAVE(CKR_FUNCTION_NOT_SUPPORTED);     \
	}

NOT_SUPPORTED(C_InitPIN, (CK_SESSION_HANDLE a, CK_UTF8CHAR_PTR b, CK_ULONG c),
              (void)a; (void)b; (void)c)
NOT_SUPPORTED(C_SetPIN,
              (CK_SESSION_HANDLE a, CK_UTF8CHAR_PTR b, CK_ULONG c, CK_UTF8CHAR_PTR d, CK_ULONG e),
              (void)a; (void)b; (void)c; (void)d; (void)e)
NOT_SUPPORTED(C_GetOperationState, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG_PTR c),
              (void)a; (void)b; (void)c)
NOT_SUPPORTED(C_SetOperationState,
              (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_OBJECT_HANDLE d,
               CK_OBJECT_HANDLE e),
              (void)a; (void)b; (void)c; (void)d; (void)e)
NOT_SUPPORTED(C_CopyObject,
              (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR c, CK_ULONG d,
               CK_OBJECT_HANDLE_PTR e),
              (void)a; (void)b; (void)c; (void)d; (void)e)
NOT_SUPPORTED(C_SignRecoverInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c),
              (void)a; (void)b; (void)c)
NOT_SUPPORTED(C_SignRecover,
              (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e),
              (void)a; (void)b; (void)c; (void)d; (void)e)
NOT_SUPPORTED(C_VerifyRecoverInit,
              (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c),
              (void)a; (void)b; (void)c)
NOT_SUPPORTED(C_VerifyRecover,
              (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e),
              (void)a; (void)b; (void)c; (void)d; (void)e)
NOT_SUPPORTED(C_DigestEncryptUpdate,
              (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e),
              (void)a; (void)b; (void)c; (void)d; (void)e)
NOT_SUPPORTED(C_DecryptDigestUpdate,
              (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e),
              (void)a; (void)b; (void)c; (void)d; (void)e)
NOT_SUPPORTED(C_SignEncryptUpdate,
              (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e),
              (void)a; (void)b; (void)c; (void)d; (void)e)
NOT_SUPPORTED(C_DecryptVerifyUpdate,
              (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e),
              (void)a; (void)b; (void)c; (void)d; (void)e)
NOT_SUPPORTED(C_WrapKey,
              (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c, CK_OBJECT_HANDLE d,
               CK_BYTE_PTR e, CK_ULONG_PTR f),
              (void)a; (void)b; (void)c; (void)d; (void)e; (void)f)
NOT_SUPPORTED(C_UnwrapKey,
              (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c, CK_BYTE_PTR d,
               CK_ULONG e, CK_ATTRIBUTE_PTR f, CK_ULONG g, CK_OBJECT_HANDLE_PTR h),
              (void)a; (void)b; (void)c; (void)d; (void)e; (void)f; (void)g; (void)h)
/* Legacy functions of parallel sessions, which this token has none of. */
CK_RV C_GetFunctionStatus(CK_SESSION_HANDLE h)
{
	ENTER_SESSION(h);
	LEAVE(CKR_FUNCTION_NOT_PARALLEL);
}

CK_RV C_CancelFunction(CK_SESSION_HANDLE h)
{
	ENTER_SESSION(h);
	LEAVE(CKR_FUNCTION_NOT_PARALLEL);
}

/* ---- the function list ------------------------------------------------------------------------- */

CK_FUNCTION_LIST p11_function_list = {
    .version = {2, 40},
    .C_Initialize = C_Initialize,
    .C_Finalize = C_Finalize,
    .C_GetInfo = C_GetInfo,
    .C_GetFunctionList = C_GetFunctionList,
    .C_GetSlotList = C_GetSlotList,
    .C_GetSlotInfo = C_GetSlotInfo,
    .C_GetTokenInfo = C_GetTokenInfo,
    .C_GetMechanismList = C_GetMechanismList,
    .C_GetMechanismInfo = C_GetMechanismInfo,
    .C_InitToken = C_InitToken,
    .C_InitPIN = C_InitPIN,
    .C_SetPIN = C_SetPIN,
    .C_OpenSession = C_OpenSession,
    .C_CloseSession = C_CloseSession,
    .C_CloseAllSessions = C_CloseAllSessions,
    .C_GetSessionInfo = C_GetSessionInfo,
    .C_GetOperationState = C_GetOperationState,
    .C_SetOperationState = C_SetOperationState,
    .C_Login = C_Login,
    .C_Logout = C_Logout,
    .C_CreateObject = C_CreateObject,
    .C_CopyObject = C_CopyObject,
    .C_DestroyObject = C_DestroyObject,
    .C_GetObjectSize = C_GetObjectSize,
    .C_GetAttributeValue = C_GetAttributeValue,
    .C_SetAttributeValue = C_SetAttributeValue,
    .C_FindObjectsInit = C_FindObjectsInit,
    .C_FindObjects = C_FindObjects,
    .C_FindObjectsFinal = C_FindObjectsFinal,
    .C_EncryptInit = C_EncryptInit,
    .C_Encrypt = C_Encrypt,
    .C_EncryptUpdate = C_EncryptUpdate,
    .C_EncryptFinal = C_EncryptFinal,
    .C_DecryptInit = C_DecryptInit,
    .C_Decrypt = C_Decrypt,
    .C_DecryptUpdate = C_DecryptUpdate,
    .C_DecryptFinal = C_DecryptFinal,
    .C_DigestInit = C_DigestInit,
    .C_Digest = C_Digest,
    .C_DigestUpdate = C_DigestUpdate,
    .C_DigestKey = C_DigestKey,
    .C_DigestFinal = C_DigestFinal,
    .C_SignInit = C_SignInit,
    .C_Sign = C_Sign,
    .C_SignUpdate = C_SignUpdate,
    .C_SignFinal = C_SignFinal,
    .C_SignRecoverInit = C_SignRecoverInit,
    .C_SignRecover = C_SignRecover,
    .C_VerifyInit = C_VerifyInit,
    .C_Verify = C_Verify,
    .C_VerifyUpdate = C_VerifyUpdate,
    .C_VerifyFinal = C_VerifyFinal,
    .C_VerifyRecoverInit = C_VerifyRecoverInit,
    .C_VerifyRecover = C_VerifyRecover,
    .C_DigestEncryptUpdate = C_DigestEncryptUpdate,
    .C_DecryptDigestUpdate = C_DecryptDigestUpdate,
    .C_SignEncryptUpdate = C_SignEncryptUpdate,
    .C_DecryptVerifyUpdate = C_DecryptVerifyUpdate,
    .C_GenerateKey = C_GenerateKey,
    .C_GenerateKeyPair = C_GenerateKeyPair,
    .C_WrapKey = C_WrapKey,
    .C_UnwrapKey = C_UnwrapKey,
    .C_DeriveKey = C_DeriveKey,
    .C_SeedRandom = C_SeedRandom,
    .C_GenerateRandom = C_GenerateRandom,
    .C_GetFunctionStatus = C_GetFunctionStatus,
    .C_CancelFunction = C_CancelFunction,
    .C_WaitForSlotEvent = C_WaitForSlotEvent,
};

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR out)
{
	if (out == NULL)
		return CKR_ARGUMENTS_BAD;
	*out = &p11_function_list;
	return CKR_OK;
}
