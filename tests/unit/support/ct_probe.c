#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/ct_probe.h"

#define VALGRIND_PATH "/usr/bin/valgrind"
#define STR(x) #x
#define XSTR(x) STR(x)

int ct_probe_run(const char *mode, bool quiet)
{
	if (access(VALGRIND_PATH, X_OK) != 0)
		fail_msg("%s is needed for the constant-time check (scripts/install-deps.sh installs it)",
		         VALGRIND_PATH);
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	assert_true(n > 0);
	self[n] = '\0';
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open("/dev/null", O_WRONLY);
		if (fd >= 0) {
			dup2(fd, STDOUT_FILENO);
			if (quiet)
				dup2(fd, STDERR_FILENO);
		}
		execl(VALGRIND_PATH, "valgrind", "-q", "--error-exitcode=" XSTR(CT_PROBE_LEAKS),
		      "--expensive-definedness-checks=yes", self, mode, (char *)NULL);
		_exit(127);
	}
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}
