/*
 * config_fuzz.c - the configuration file parser (hsm_config_load in
 * server/config.h, "--config FILE").
 *
 * Input: the contents of the configuration file.  The file is written to a
 * temporary path made once per process; the environment is empty, so only
 * the file and the defaults count.
 *
 * Properties: a refused file is ValidationException with a message; an
 * accepted one yields a configuration that satisfies the cross-setting
 * rules the loader promises (TLS certificate and key together, a secure
 * heap size that is a power of two, at least one worker, a listen address,
 * default lifetime within the maximum).
 */
#include <fcntl.h>
#include <unistd.h>

#include "fuzz.h"

#include "server/config.h"

static char path[64];

static void cleanup(void)
{
	if (path[0] != '\0')
		unlink(path);
}

static void write_input(const uint8_t *data, size_t size)
{
	if (path[0] == '\0') {
		const char *tmp = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
		FUZZ_ASSERT(snprintf(path, sizeof(path), "%s/hsm-fuzz-config-XXXXXX", tmp) <
		            (int)sizeof(path));
		int fd = mkstemp(path);
		FUZZ_ASSERT(fd >= 0);
		close(fd);
		atexit(cleanup);
	}
	FILE *f = fopen(path, "wb");
	FUZZ_ASSERT(f != NULL);
	FUZZ_ASSERT(size == 0 || fwrite(data, 1, size, f) == size);
	FUZZ_ASSERT(fclose(f) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	write_input(data, size);
	char arg0[] = "hsmd", arg1[] = "--config";
	char *const argv[] = {arg0, arg1, path, NULL};
	char *const envp[] = {NULL};
	static hsm_config cfg;
	hsm_config_action action;
	hsm_result r = hsm_config_load(&cfg, 3, argv, envp, &action);
	if (hsm_failed(r)) {
		FUZZ_ASSERT(r.err == HSM_ERR_VALIDATION);
		FUZZ_ASSERT(hsm_last_message()[0] != '\0');
		return 0;
	}
	FUZZ_ASSERT(action == HSM_CONFIG_RUN);
	FUZZ_ASSERT(strcmp(cfg.config_file, path) == 0);
	FUZZ_ASSERT((cfg.tls_cert[0] == '\0') == (cfg.tls_key[0] == '\0'));
	FUZZ_ASSERT(cfg.secure_heap_bytes != 0 &&
	            (cfg.secure_heap_bytes & (cfg.secure_heap_bytes - 1)) == 0);
	FUZZ_ASSERT(cfg.workers >= 1 && cfg.listen[0] != '\0');
	FUZZ_ASSERT(cfg.jwt_default_lifetime_seconds <= cfg.jwt_max_lifetime_seconds);
	FUZZ_ASSERT(cfg.n_warnings <= HSM_CONFIG_MAX_WARNINGS);
	FUZZ_ASSERT(cfg.data_dir[0] != '\0' && cfg.audit_dir[0] != '\0' && cfg.node_id[0] != '\0');
	return 0;
}
