/*
 * x509_test.c - hsm_x509_from_der (crypto/x509.h): one DER certificate,
 * exactly; BER encodings, trailing or missing bytes and other structures
 * refused.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include <openssl/evp.h>

#include "crypto/x509.h"

/* A self-signed P-256 certificate made here, as DER (OPENSSL_free it). */
static int make_cert(unsigned char **der)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	assert_non_null(k);
	assert_non_null(x);
	X509_NAME *n = X509_get_subject_name(x);
	assert_int_equal(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
	                                            (const unsigned char *)"x509 test", -1, -1, 0),
	                 1);
	assert_int_equal(X509_set_issuer_name(x, n), 1);
	assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), 42), 1);
	assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
	assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 86400));
	assert_int_equal(X509_set_pubkey(x, k), 1);
	assert_true(X509_sign(x, k, EVP_sha256()) > 0);
	*der = NULL;
	int len = i2d_X509(x, der);
	assert_true(len > 0 && len < 128 + 256 + 256);
	X509_free(x);
	EVP_PKEY_free(k);
	return len;
}

static void test_exactly_one_der_certificate(void **state)
{
	(void)state;
	unsigned char *der;
	size_t len = (size_t)make_cert(&der);
	X509 *x = hsm_x509_from_der(der, len, 32768);
	assert_non_null(x);
	assert_int_equal(ASN1_INTEGER_get(X509_get0_serialNumber(x)), 42);
	X509_free(x);
	/* The bound is inclusive. */
	x = hsm_x509_from_der(der, len, len);
	assert_non_null(x);
	X509_free(x);
	assert_null(hsm_x509_from_der(der, len, len - 1));
	assert_null(hsm_x509_from_der(der, 0, 32768));
	assert_null(hsm_x509_from_der(NULL, len, 32768));

	unsigned char buf[1024];
	assert_true(len + 2 <= sizeof(buf));
	/* A byte more or less. */
	memcpy(buf, der, len);
	buf[len] = 0;
	assert_null(hsm_x509_from_der(buf, len + 1, 32768));
	assert_null(hsm_x509_from_der(der, len - 1, 32768));
	/* BER: the outer length in long form with one octet too many (0x82 LL LL -> 0x83 00 LL LL). */
	assert_int_equal(der[0], 0x30);
	assert_int_equal(der[1], 0x82);
	buf[0] = 0x30;
	buf[1] = 0x83;
	buf[2] = 0x00;
	memcpy(buf + 3, der + 2, len - 2);
	assert_null(hsm_x509_from_der(buf, len + 1, 32768));
	/* Another DER structure: a public key, not a certificate. */
	X509 *again = hsm_x509_from_der(der, len, 32768);
	unsigned char *spki = NULL;
	int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(again), &spki);
	assert_true(n > 0);
	assert_null(hsm_x509_from_der(spki, (size_t)n, 32768));
	OPENSSL_free(spki);
	X509_free(again);
	OPENSSL_free(der);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exactly_one_der_certificate),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
