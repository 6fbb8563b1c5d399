/*
 * sigv4_prim.c - hashing, HMAC and timestamps for SigV4.
 *
 * The hash and MAC implementations are fetched once per process: OpenSSL
 * 3's implicit fetch by name on every call costs more than hashing a
 * typical KMS request.  HMAC contexts are cloned from a template that
 * already names SHA-256, so a MAC costs one context copy and no lookup.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "auth/sigv4_internal.h"
#include "common/encoding.h"
#include "common/util.h"

static pthread_mutex_t prim_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool prim_set_up;
static EVP_MD *prim_sha256;
static EVP_MAC_CTX *prim_hmac_template;

static bool prim_init(void)
{
	if (prim_sha256 == NULL)
		prim_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	EVP_MAC *mac = prim_sha256 != NULL ? EVP_MAC_fetch(NULL, "HMAC", NULL) : NULL;
	EVP_MAC_CTX *ctx = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL;
	EVP_MAC_free(mac); /* the context keeps its own reference */
	if (ctx == NULL)
		return false;
	char digest[] = "SHA256";
	OSSL_PARAM params[] = {
	    OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
	    OSSL_PARAM_construct_end(),
	};
	if (EVP_MAC_CTX_set_params(ctx, params) != 1) {
		EVP_MAC_CTX_free(ctx);
		return false;
	}
	prim_hmac_template = ctx;
	return true;
}

/*
 * Sets the implementations up on first use.  Not pthread_once: a set-up that
 * failed (memory ran out, in a process this code shares with an application
 * through the PKCS#11 module) is tried again by the next call, rather than
 * leaving SigV4 unavailable for the life of the process.
 */
static hsm_result prim_ready(void)
{
	if (atomic_load_explicit(&prim_set_up, memory_order_acquire))
		return HSM_SUCCESS;
	pthread_mutex_lock(&prim_lock);
	errno = 0;
	bool ok = atomic_load_explicit(&prim_set_up, memory_order_relaxed) || prim_init();
	hsm_err err = hsm_nomem_or(HSM_ERR_CRYPTO);
	if (ok)
		atomic_store_explicit(&prim_set_up, true, memory_order_release);
	pthread_mutex_unlock(&prim_lock);
	HSM_ENSURE(ok, err, "SHA-256 or HMAC is unavailable%s",
	           err == HSM_ERR_NOMEM ? ": out of memory" : "");
	return HSM_SUCCESS;
}

hsm_result hsm_sigv4_sha256_hex(const void *p, size_t n, char out[HSM_SIGV4_HEX_HASH_LEN + 1])
{
	uint8_t md[32];
	unsigned int md_len = 0;
	HSM_GUARD(prim_ready());
	/* EVP_Digest wants a non-NULL pointer even for an empty message. */
	errno = 0;
	HSM_ENSURE(EVP_Digest(n > 0 ? p : "", n, md, &md_len, prim_sha256, NULL) == 1 &&
	               md_len == sizeof(md),
	           hsm_nomem_or(HSM_ERR_CRYPTO), "SHA-256 failed");
	hsm_hex_encode_str(out, md, sizeof(md));
	return HSM_SUCCESS;
}

hsm_result hsm_sigv4_hmac(const uint8_t *key, size_t key_len, const void *msg, size_t msg_len,
                          uint8_t out[HSM_SIGV4_SIG_LEN])
{
	hsm_result res = HSM_SUCCESS;
	EVP_MAC_CTX *ctx = NULL;
	size_t out_len = 0;
	HSM_TRY(prim_ready());
	errno = 0;
	ctx = EVP_MAC_CTX_dup(prim_hmac_template);
	HSM_CHECK(ctx != NULL, HSM_ERR_NOMEM, "out of memory");
	HSM_CHECK(EVP_MAC_init(ctx, key, key_len, NULL) == 1 &&
	              EVP_MAC_update(ctx, msg, msg_len) == 1 &&
	              EVP_MAC_final(ctx, out, &out_len, HSM_SIGV4_SIG_LEN) == 1 &&
	              out_len == HSM_SIGV4_SIG_LEN,
	          hsm_nomem_or(HSM_ERR_CRYPTO), "HMAC-SHA256 failed");
out:
	EVP_MAC_CTX_free(ctx);
	return res;
}

hsm_result hsm_sigv4_mac_new(const hsm_secret *key, EVP_MAC_CTX **out)
{
	EVP_MAC_CTX *ctx;
	HSM_ASSERT(hsm_secret_len(key) == HSM_SIGV4_KEY_LEN);
	HSM_GUARD(prim_ready());
	errno = 0;
	ctx = EVP_MAC_CTX_dup(prim_hmac_template);
	HSM_ENSURE(ctx != NULL, HSM_ERR_NOMEM, "out of memory");
	if (EVP_MAC_init(ctx, hsm_secret_bytes(key), HSM_SIGV4_KEY_LEN, NULL) != 1) {
		hsm_err err = hsm_nomem_or(HSM_ERR_CRYPTO);
		EVP_MAC_CTX_free(ctx);
		return HSM_FAIL(err, "HMAC-SHA256 failed");
	}
	*out = ctx;
	return HSM_SUCCESS;
}

/* AWS IAM User Guide, "Create a signed AWS API request", steps 2 and 3. */
hsm_result hsm_sigv4_string_to_sign(const hsm_buf *canonical, const char *amz_date,
                                    const char *date, const char *region, const char *service,
                                    char sts[HSM_SIGV4_STS_MAX], size_t *len)
{
	char creq_hex[HSM_SIGV4_HEX_HASH_LEN + 1];
	HSM_GUARD(hsm_sigv4_sha256_hex(canonical->data, canonical->len, creq_hex));
	hsm_sb b;
	hsm_sb_init(&b, sts, HSM_SIGV4_STS_MAX);
	const char *parts[] = {HSM_SIGV4_ALGORITHM, "\n", amz_date, "\n", date, "/", region, "/",
	                       service, "/", HSM_SIGV4_TERMINATOR, "\n", creq_hex};
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
		hsm_sb_add(&b, parts[i]);
	HSM_ENSURE(!b.cut, HSM_ERR_INTERNAL, "string to sign too long");
	*len = b.len;
	return HSM_SUCCESS;
}

/* Step 4: the string to sign's HMAC under the signing key mac holds. */
hsm_result hsm_sigv4_compute(const hsm_buf *canonical, const char *amz_date, const char *date,
                             const char *region, const char *service, EVP_MAC_CTX *mac,
                             uint8_t out[HSM_SIGV4_SIG_LEN])
{
	char sts[HSM_SIGV4_STS_MAX];
	size_t n = 0, out_len = 0;
	HSM_GUARD(hsm_sigv4_string_to_sign(canonical, amz_date, date, region, service, sts, &n));
	/* A NULL key restarts the MAC with the key the context already holds. */
	errno = 0;
	HSM_ENSURE(EVP_MAC_init(mac, NULL, 0, NULL) == 1 && EVP_MAC_update(mac, (const uint8_t *)sts, n) == 1 &&
	               EVP_MAC_final(mac, out, &out_len, HSM_SIGV4_SIG_LEN) == 1 &&
	               out_len == HSM_SIGV4_SIG_LEN,
	           hsm_nomem_or(HSM_ERR_CRYPTO), "HMAC-SHA256 failed");
	return HSM_SUCCESS;
}

/* ---- Timestamps ------------------------------------------------------------ */

static bool digits(const char *s, size_t n, int *out)
{
	int v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian, y >= 0). */
static int64_t days_from_civil(int y, unsigned m, unsigned d)
{
	y -= m <= 2U;
	int64_t era = y / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153U * (m > 2U ? m - 3U : m + 9U) + 2U) / 5U + d - 1U;
	unsigned doe = yoe * 365U + yoe / 4U - yoe / 100U + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

/* Converts broken-down UTC time to epoch seconds; false unless it is a real instant. */
static bool tm_to_epoch(int year, int mon, int day, int hh, int mm, int ss, int64_t *t)
{
	static const unsigned char mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	if (year < 1970 || year > 9999 || mon < 1 || mon > 12 || day < 1 ||
	    day > mdays[mon - 1] || hh > 23 || mm > 59 || ss > 59)
		return false;
	bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
	if (mon == 2 && day == 29 && !leap)
		return false;
	*t = days_from_civil(year, (unsigned)mon, (unsigned)day) * 86400 + hh * 3600 + mm * 60 + ss;
	return true;
}

bool hsm_sigv4_parse_amz_date(const char *s, int64_t *t)
{
	int y, mo, d, h, mi, se;
	if (strlen(s) != HSM_SIGV4_AMZ_DATE_LEN || s[8] != 'T' || s[15] != 'Z')
		return false;
	if (!digits(s, 4, &y) || !digits(s + 4, 2, &mo) || !digits(s + 6, 2, &d) ||
	    !digits(s + 9, 2, &h) || !digits(s + 11, 2, &mi) || !digits(s + 13, 2, &se))
		return false;
	return tm_to_epoch(y, mo, d, h, mi, se, t);
}

static void put_digits(char *out, unsigned v, size_t n)
{
	while (n-- > 0) {
		out[n] = (char)('0' + v % 10U);
		v /= 10U;
	}
}

/* Every request formats a time or two; gmtime_r and strftime cost about a
 * microsecond, days-to-civil arithmetic (proleptic Gregorian) a few
 * nanoseconds.  Only four-digit years fit the format: times outside
 * 0000..9999 (which neither a parsed date nor the clock gives) are clamped. */
void hsm_sigv4_format_amz_date(int64_t t, char out[HSM_SIGV4_AMZ_DATE_LEN + 1])
{
	static const int64_t first = -62167219200LL, last = 253402300799LL; /* 0000-01-01, 9999-12-31 */
	t = t < first ? first : t > last ? last : t;
	int64_t days = t >= 0 ? t / 86400 : (t - 86399) / 86400;
	unsigned secs = (unsigned)(t - days * 86400);
	/* Shift to eras of 400 years starting 0000-03-01 (day 0 = -719468). */
	int64_t z = days + 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	unsigned doe = (unsigned)(z - era * 146097);
	unsigned yoe = (doe - doe / 1460U + doe / 36524U - doe / 146096U) / 365U;
	unsigned doy = doe - (365U * yoe + yoe / 4U - yoe / 100U);
	unsigned mp = (5U * doy + 2U) / 153U;
	unsigned day = doy - (153U * mp + 2U) / 5U + 1U;
	unsigned mon = mp < 10U ? mp + 3U : mp - 9U;
	int64_t year = (int64_t)yoe + era * 400 + (mon <= 2U);
	put_digits(out, (unsigned)year, 4);
	put_digits(out + 4, mon, 2);
	put_digits(out + 6, day, 2);
	out[8] = 'T';
	put_digits(out + 9, secs / 3600U, 2);
	put_digits(out + 11, secs / 60U % 60U, 2);
	put_digits(out + 13, secs % 60U, 2);
	out[15] = 'Z';
	out[16] = '\0';
}

bool hsm_sigv4_parse_http_date(const char *s, int64_t *t)
{
	static const char days[] = "MonTueWedThuFriSatSun";
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	int d, y, h, mi, se, mo = 0;
	/*
	 * "Sun, 06 Nov 1994 08:49:37 GMT" (RFC 7231 section 7.1.1.1, IMF-fixdate),
	 * or the same with a zero numeric zone (RFC 5322 section 3.3), which is
	 * what botocore sends ("... 08:49:37 -0000").
	 */
	size_t len = strlen(s);
	bool zone_ok = (len == 29 && strcmp(s + 25, " GMT") == 0) ||
	               (len == 31 && (strcmp(s + 25, " +0000") == 0 || strcmp(s + 25, " -0000") == 0));
	if (!zone_ok || s[3] != ',' || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' ||
	    s[19] != ':' || s[22] != ':')
		return false;
	bool day_ok = false;
	for (size_t i = 0; i + 3 <= sizeof(days) - 1; i += 3)
		day_ok = day_ok || strncmp(s, days + i, 3) == 0;
	for (size_t i = 0; i + 3 <= sizeof(months) - 1 && mo == 0; i += 3) {
		if (strncmp(s + 8, months + i, 3) == 0)
			mo = (int)(i / 3) + 1;
	}
	if (!day_ok || mo == 0 || !digits(s + 5, 2, &d) || !digits(s + 12, 4, &y) ||
	    !digits(s + 17, 2, &h) || !digits(s + 20, 2, &mi) || !digits(s + 23, 2, &se))
		return false;
	return tm_to_epoch(y, mo, d, h, mi, se, t);
}
