/*
 * version.c - the build's version (util.h); hsm_build_id.h is written at
 * every build by cmake/build_id.cmake.
 */
#include "common/util.h"
#include "hsm_build_id.h"

const char *hsm_version(void)
{
	return HSM_VERSION "+" HSM_BUILD_ID;
}
