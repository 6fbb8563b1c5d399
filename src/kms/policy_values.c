/*
 * policy_values.c - condition values that are not plain text: instants
 * (the Date operators).  IP networks (the IpAddress operators) are read by
 * common/net.c.
 *
 * Dates follow the W3C profile of ISO 8601 that IAM documents for the Date
 * operators (YYYY-MM, YYYY-MM-DD, and a whole date with a time of day and a
 * zone: Thh:mmTZD, Thh:mm:ssTZD, Thh:mm:ss.sTZD, TZD being Z or +hh:mm or
 * -hh:mm), or a number of seconds since the epoch.  The profile's year-only
 * form is left out: a bare number is always seconds since the epoch.
 */
#include <string.h>

#include "kms/policy_internal.h"

/* ---- instants ----------------------------------------------------------------------- */

/* Reads exactly n decimal digits at *p and advances past them. */
static bool digits(const char **p, int n, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		char ch = (*p)[i];
		if (ch < '0' || ch > '9')
			return false;
		v = v * 10 + (ch - '0');
	}
	*p += n;
	*out = v;
	return true;
}

static bool leap(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
	static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	return m == 2 && leap(y) ? 29 : days[m - 1];
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar. */
static long long days_since_epoch(int y, int m, int d)
{
	/* Counting from March makes the leap day the last day of the year. */
	long long yy = m <= 2 ? y - 1 : y;
	long long era = (yy >= 0 ? yy : yy - 399) / 400;
	long long yoe = yy - era * 400;
	long long doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* The zone designator: Z, or +hh:mm / -hh:mm; *offset is what to subtract, in seconds. */
static bool zone(const char **p, long long *offset)
{
	char sign = **p;
	int h, m;
	if (sign == 'Z') {
		(*p)++;
		*offset = 0;
		return true;
	}
	if (sign != '+' && sign != '-')
		return false;
	(*p)++;
	if (!digits(p, 2, &h) || **p != ':')
		return false;
	(*p)++;
	if (!digits(p, 2, &m) || h > 23 || m > 59)
		return false;
	*offset = (sign == '+' ? 1 : -1) * (h * 3600LL + m * 60LL);
	return true;
}

/* hh:mm[:ss[.s+]] after the 'T'; seconds of the day into *secs, fraction into *frac. */
static bool time_of_day(const char **p, long long *secs, double *frac)
{
	int h, m, s = 0;
	if (!digits(p, 2, &h) || **p != ':')
		return false;
	(*p)++;
	if (!digits(p, 2, &m))
		return false;
	*frac = 0;
	if (**p == ':') {
		(*p)++;
		if (!digits(p, 2, &s))
			return false;
		if (**p == '.') {
			(*p)++;
			double scale = 0.1;
			const char *start = *p;
			for (; **p >= '0' && **p <= '9'; (*p)++, scale /= 10)
				*frac += (**p - '0') * scale;
			if (*p == start)
				return false;
		}
	}
	/* 60 seconds: a leap second, which POSIX time folds into the next minute. */
	if (h > 23 || m > 59 || s > 60)
		return false;
	*secs = h * 3600LL + m * 60LL + s;
	return true;
}

bool hsm_pol_date(const char *s, double *out)
{
	if (hsm_pol_number(s, out))
		return true; /* seconds since the epoch */
	const char *p = s;
	int y, m = 1, d = 1;
	if (!digits(&p, 4, &y) || *p != '-')
		return false;
	p++;
	if (!digits(&p, 2, &m) || m < 1 || m > 12)
		return false;
	if (*p == '-') {
		p++;
		if (!digits(&p, 2, &d) || d < 1 || d > days_in_month(y, m))
			return false;
	}
	long long secs = 0, offset = 0;
	double frac = 0;
	if (*p == 'T') {
		p++;
		/* A time of day needs the whole date and a zone. */
		if (p - s != 11 || !time_of_day(&p, &secs, &frac) || !zone(&p, &offset))
			return false;
	}
	if (*p != '\0')
		return false;
	*out = (double)(days_since_epoch(y, m, d) * 86400LL + secs - offset) + frac;
	return true;
}
