/*
 * marker.h - pagination markers (NextMarker / Marker of the KMS listings,
 * and of HsmdAdmin.ListCertificates and ListApprovals).
 *
 * A marker is opaque to clients (AWS KMS API reference, "Marker": "use the
 * value of NextMarker from the truncated response you just received"):
 * the base64url, without padding, of "<listing>:<scope>:<position>", where
 * listing names the operation that issued it, scope is the key id the
 * listing was limited to ("-" for none) and position the name of the last
 * item returned (a key id, alias name, tag key, version number, grant id or
 * certificate id; for HsmdAdmin.ListApprovals, whose order is newest first,
 * "<created>.<approval id>", the place of the request in that order).
 * The next page starts after that name, whether or not the item still
 * exists, so a walk goes on past deletions and any node sharing the store,
 * before or after a restart, continues it.  A marker another listing, or
 * the same listing for another key, issued, or one that is not the
 * canonical encoding of a position hsmd could issue, is refused with
 * InvalidMarkerException.
 */
#ifndef HSM_SERVER_MARKER_H
#define HSM_SERVER_MARKER_H

#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/result.h"

typedef enum hsm_marker_kind {
	HSM_MARKER_KEYS,             /* ListKeys: key ids */
	HSM_MARKER_DESCRIBE_KEYS,    /* HsmdToken.DescribeKeys: key ids */
	HSM_MARKER_ALIASES,          /* ListAliases: alias names */
	HSM_MARKER_TAGS,             /* ListResourceTags: tag keys */
	HSM_MARKER_ROTATIONS,        /* ListKeyRotations: version numbers */
	HSM_MARKER_GRANTS,           /* ListGrants: grant ids */
	HSM_MARKER_RETIRABLE_GRANTS, /* ListRetirableGrants: grant ids */
	HSM_MARKER_CERTIFICATES,     /* HsmdAdmin.ListCertificates: certificate ids */
	HSM_MARKER_APPROVALS,        /* HsmdAdmin.ListApprovals of the open requests */
	HSM_MARKER_ALL_APPROVALS,    /* HsmdAdmin.ListApprovals with IncludeClosed */
	HSM_MARKER_KIND_COUNT
} hsm_marker_kind;

/* A decoded position as the listings take it: NULL when there is none. */
static inline const char *hsm_marker_at(const hsm_buf *position)
{
	return position->len > 0 ? (const char *)position->data : NULL;
}

/*
 * The marker of the listing `kind`, limited to the key `scope` (a key id;
 * NULL: not limited to a key), that goes on after `position`, into *out
 * (replaced; the caller frees it; not NUL-terminated).  position must be
 * one the listing could issue (HSM_ERR_INTERNAL otherwise).
 */
hsm_result hsm_marker_encode(hsm_marker_kind kind, const char *scope, const char *position,
                             hsm_buf *out) HSM_MUST_CHECK;

/*
 * The position `marker` holds, into *position (replaced; NUL-terminated;
 * the caller frees it), when the listing `kind` limited to `scope` (as for
 * hsm_marker_encode) issued it: HSM_ERR_INVALID_MARKER otherwise.  With
 * check_scope false, any scope of the right form is taken: for a listing
 * whose KeyId names no key, which then fails on that.
 */
hsm_result hsm_marker_decode(hsm_marker_kind kind, const char *scope, bool check_scope,
                             const char *marker, hsm_buf *position) HSM_MUST_CHECK;

/* An approval listing's position: "<created>.<id>", created in decimal (marker.h). */
#define HSM_MARKER_APPROVAL_POSITION_MAX 64
hsm_result hsm_marker_approval_position(int64_t created, const char *id,
                                        char out[HSM_MARKER_APPROVAL_POSITION_MAX]) HSM_MUST_CHECK;
/*
 * The created and id a decoded approval position (hsm_marker_decode checked
 * its form) holds; *id points into position.  HSM_ERR_INVALID_MARKER when
 * it is not one.
 */
hsm_result hsm_marker_approval_at(const char *position, int64_t *created,
                                  const char **id) HSM_MUST_CHECK;

#endif
