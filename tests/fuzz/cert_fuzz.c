/*
 * cert_fuzz.c - certificates from outside (ImportCertificate, the PKCS#11
 * module's C_CreateObject): hsm_x509_from_der (crypto/x509.h) and the
 * description listings give of a stored one, hsm_cert_describe (kms.h).
 *
 * Input: the bytes offered as a DER certificate.
 *
 * Properties: the reader takes exactly one DER certificate of at most
 * HSM_CERT_DER_MAX bytes, so an accepted input is what its certificate
 * re-encodes to, byte for byte, and anything longer is refused; the
 * description succeeds only for what the reader accepts, and otherwise
 * fails with ValidationException; a description's names are NUL-terminated
 * printable ASCII within their fields (they go into JSON and terminals),
 * its serial number is lower-case hex with an optional sign, and its
 * validity is the one the certificate states.
 */
#include "fuzz.h"

#include <time.h>

#include "crypto/x509.h"
#include "kms/kms.h"

static void check_name(const char *s, size_t cap)
{
	size_t n = strnlen(s, cap);
	FUZZ_ASSERT(n < cap);
	for (size_t i = 0; i < n; i++)
		FUZZ_ASSERT(s[i] >= 0x20 && s[i] < 0x7f);
}

static void check_serial(const char *s, size_t cap)
{
	size_t n = strnlen(s, cap);
	FUZZ_ASSERT(n >= 1 && n < cap);
	size_t i = s[0] == '-' ? 1 : 0;
	FUZZ_ASSERT(i < n);
	for (; i < n; i++)
		FUZZ_ASSERT((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'));
}

/* A certificate time as epoch seconds, as OpenSSL reads it; false when it cannot. */
static bool seconds(const ASN1_TIME *t, int64_t *out)
{
	struct tm tm;
	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
		return false;
	*out = (int64_t)timegm(&tm);
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	X509 *x = hsm_x509_from_der(data, size, HSM_CERT_DER_MAX);
	if (x != NULL) {
		FUZZ_ASSERT(size >= 1 && size <= HSM_CERT_DER_MAX);
		unsigned char *again = NULL;
		int n = i2d_X509(x, &again);
		FUZZ_ASSERT(n > 0 && (size_t)n == size && memcmp(again, data, size) == 0);
		OPENSSL_free(again);
		/* The same bytes under a lower bound, or with one byte more, are refused. */
		FUZZ_ASSERT(hsm_x509_from_der(data, size, size - 1) == NULL);
		uint8_t *longer = malloc(size + 1);
		FUZZ_ASSERT(longer != NULL);
		memcpy(longer, data, size);
		longer[size] = 0;
		FUZZ_ASSERT(hsm_x509_from_der(longer, size + 1, HSM_CERT_DER_MAX + 1) == NULL);
		free(longer);
	}

	hsm_cert_info info;
	memset(&info, 0x41, sizeof(info)); /* no NUL to be found by accident */
	hsm_result r = hsm_cert_describe(data, size, &info);
	if (x == NULL) {
		FUZZ_EXPECT_ERR(r, HSM_ERR_VALIDATION);
		return 0;
	}
	int64_t nb = 0, na = 0;
	bool dated = seconds(X509_get0_notBefore(x), &nb) && seconds(X509_get0_notAfter(x), &na);
	if (hsm_failed(r)) {
		/* Only a validity OpenSSL cannot read stops a certificate the reader took. */
		FUZZ_EXPECT_ERR(r, HSM_ERR_VALIDATION);
		FUZZ_ASSERT(!dated);
	} else {
		FUZZ_ASSERT(dated && info.not_before == nb && info.not_after == na);
		check_name(info.subject, sizeof(info.subject));
		check_name(info.issuer, sizeof(info.issuer));
		check_serial(info.serial, sizeof(info.serial));
	}
	X509_free(x);
	return 0;
}
