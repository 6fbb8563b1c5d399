/*
 * x509.c - reading X.509 certificates (x509.h).
 */
#include "crypto/x509.h"

#include <openssl/crypto.h>

#include "common/util.h"

X509 *hsm_x509_from_der(const uint8_t *der, size_t len, size_t max)
{
	const unsigned char *p = der;
	if (der == NULL || len == 0 || len > max || len > (size_t)INT32_MAX)
		return NULL;
	X509 *x = d2i_X509(NULL, &p, (long)len);
	if (x == NULL)
		return NULL;
	unsigned char *again = NULL;
	int n = i2d_X509(x, &again);
	bool exact = p == der + len && n == (int)len && again != NULL && hsm_ct_equal(again, der, len);
	OPENSSL_free(again);
	if (!exact) {
		X509_free(x);
		return NULL;
	}
	return x;
}
