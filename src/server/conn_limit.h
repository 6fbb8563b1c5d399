/*
 * conn_limit.h - open connections counted per source (source.h), so that
 * one client cannot hold every connection slot (max_connections) and keep
 * everyone else out.  Shared by the HTTP workers; one mutex, taken when a
 * connection opens or closes.
 */
#ifndef HSM_SERVER_CONN_LIMIT_H
#define HSM_SERVER_CONN_LIMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "common/result.h"
#include "server/source.h"

typedef struct hsm_conn_limit hsm_conn_limit;

/*
 * per_source: connections one source may hold open; 0: no bound (they are
 * counted all the same, for a bound set later).  max_open: how many
 * connections can be open at once, all sources together (the table is sized
 * for that many sources).
 */
hsm_result hsm_conn_limit_new(uint32_t per_source, uint32_t max_open,
                              hsm_conn_limit **out) HSM_MUST_CHECK;
void hsm_conn_limit_free(hsm_conn_limit *l);

/* Counts one more connection of src: false (nothing counted) when src holds per_source. */
bool hsm_conn_limit_take(hsm_conn_limit *l, const hsm_source *src);
/* Gives back one connection hsm_conn_limit_take counted for src. */
void hsm_conn_limit_give(hsm_conn_limit *l, const hsm_source *src);
/* How many connections src holds (for tests and logs). */
uint32_t hsm_conn_limit_held(hsm_conn_limit *l, const hsm_source *src);
/*
 * A new bound (0: none) for the connections opened from now on; a source
 * above it keeps the connections it holds until they close.
 */
void hsm_conn_limit_set(hsm_conn_limit *l, uint32_t per_source);
uint32_t hsm_conn_limit_bound(hsm_conn_limit *l);

#endif
