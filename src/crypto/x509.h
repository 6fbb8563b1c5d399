/*
 * x509.h - reading X.509 certificates (public data: usable anywhere).
 */
#ifndef HSM_CRYPTO_X509_H
#define HSM_CRYPTO_X509_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

/*
 * The certificate der holds, or NULL unless der is exactly one X.509
 * certificate in DER of 1..max bytes: nothing after it, and its DER encoding
 * (re-encoding gives the same bytes), not merely a BER one.  Free with
 * X509_free.
 */
X509 *hsm_x509_from_der(const uint8_t *der, size_t len, size_t max);

#endif
