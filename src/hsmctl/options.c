/*
 * options.c - a command's options: each at most once.
 *
 * An option takes one value, or is a switch: given twice, the second would
 * silently replace the first ("--threshold 3 ... --threshold 2" from a
 * script that appends options, or a line pasted after another), and for a
 * custody tool the one that was not meant may be the one kept.  So a
 * repeated option is refused, naming it, before the command does anything.
 * Options that collect values (--share FILE, one share file each) are never
 * noted here.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "hsmctl/hsmctl.h"

int hsmctl_once(hsmctl_seen *seen, const char *command, const char *name)
{
	for (size_t i = 0; i < seen->n; i++)
		if (strcmp(seen->names[i], name) == 0)
			return hsmctl_usage(command, "--%s is given twice: give it once", name);
	/* More distinct options than any command takes: a caller's mistake, not the user's. */
	HSM_ASSERT(seen->n < HSMCTL_SEEN_MAX);
	seen->names[seen->n++] = name;
	return 0;
}

int hsmctl_getopt_once(hsmctl_seen *seen, const char *command, const struct option *longopts,
                       int index)
{
	return index < 0 ? 0 : hsmctl_once(seen, command, longopts[index].name);
}
