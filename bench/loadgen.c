/*
 * loadgen - HTTP(S) load generator for hsmd's KMS API.
 *
 * Every request is signed with SigV4 (hsm_sigv4_sign, the project's own
 * signer: two SHA-256 and one HMAC per request) and sent over keep-alive
 * connections, one request in flight per connection.  T threads each run an
 * edge-triggered epoll loop over their share of the N connections.
 *
 * Two modes:
 *   closed loop (--rate 0): each connection sends its next request as soon
 *     as the previous answer arrived; measures the maximum throughput.
 *   constant rate (--rate R): requests are due on a fixed schedule (R per
 *     second over all connections, each connection its own evenly spaced
 *     share).  Latency is measured from the time a request was due, not
 *     from when it could be sent, so a stalled server is charged for every
 *     request it delayed (no coordinated omission; wrk2's method).
 *
 * Measurement: connections are opened (and TLS handshakes done) first;
 * then the schedule runs for --warmup seconds unrecorded and --duration
 * seconds recorded.  A request belongs to the window when it was due (or
 * sent) inside it; requests of the window still in flight at its end are
 * waited for.  Output: one JSON object on stdout.
 *
 * Credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#include "auth/sigv4.h"
#include "common/util.h"
#include "lg_conn.h"
#include "lg_hist.h"
#include "lg_body.h"

#define MAX_CONNECTIONS 4096
#define MAX_THREADS 64
#define DRAIN_GRACE_NS (10ULL * 1000000000ULL)
#define NS 1000000000ULL
/*
 * Where the tail comes from: the window is cut into SLOT_NS slots of
 * scheduled send time, each keeping its worst latency.  A tail spread over
 * many slots is queueing; one confined to a few adjacent slots is a stall
 * (the server or the host stopped for that long).
 */
#define SLOT_NS (50ULL * 1000000ULL)
#define SLOW_US 2000U   /* a slot whose worst request took longer is slow */
#define STALL_US 10000U /* adjacent slots whose worst took longer make a stall */
#define MAX_STALLS 20

typedef struct config {
	const char *url;
	const char *label;
	const char *cafile;
	char target[128];       /* X-Amz-Target value */
	lg_body_source body;    /* body template and key ids */
	unsigned connections;
	unsigned threads;
	double duration_s;
	double warmup_s;
	double rate;            /* requests per second; 0 = closed loop */
	lg_target dest;
	const char *akid;
	hsm_secret *secret;
} config;

typedef struct shared {
	const config *cfg;
	pthread_barrier_t ready;
	uint64_t t0, mstart, mend;
} shared;

typedef struct worker {
	shared *sh;
	unsigned index, first_conn, n_conns;
	lg_conn *conns;
	hsm_sigv4_signer *signer;
	lg_body_state bodies;
	hsm_buf body;
	lg_hist hist;
	uint32_t *slot_worst_us; /* per SLOT_NS of the window, by scheduled time */
	size_t n_slots;
	uint64_t ok, errors, incomplete, sent;
	uint64_t last_done_ns; /* when the last request of the window was answered */
	char first_error[200];
	int ep;
	bool failed_setup;
} worker;

static void note_error(worker *w, const char *what)
{
	w->errors++;
	if (w->first_error[0] == '\0')
		snprintf(w->first_error, sizeof(w->first_error), "%s", what);
}

/* Builds, signs and starts the next request on c, due at sched. */
static lg_io send_request(worker *w, lg_conn *c, uint64_t sched)
{
	const config *cfg = w->sh->cfg;
	hsm_sigv4_signature sig;
	if (hsm_failed(lg_body_next(&cfg->body, &w->bodies, &w->body)))
		return LG_IO_ERROR;
	hsm_sigv4_header h[] = {{"Host", cfg->dest.host_header},
	                        {"Content-Type", "application/x-amz-json-1.1"},
	                        {"X-Amz-Target", cfg->target}};
	hsm_sigv4_request req = {"POST", "/", "", h, 3, w->body.data, w->body.len};
	if (hsm_failed(hsm_sigv4_sign(w->signer, &req, hsm_now(), &sig)))
		return LG_IO_ERROR;
	/* Put piece by piece: formatting with printf took a tenth of the loadgen's CPU. */
	char clen[24];
	hsm_sb b;
	hsm_sb_init(&b, clen, sizeof(clen));
	hsm_sb_u64(&b, w->body.len);
	const char *const parts[] = {"POST / HTTP/1.1\r\nHost: ", cfg->dest.host_header,
	                             "\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: ",
	                             cfg->target, "\r\nX-Amz-Date: ", sig.amz_date,
	                             "\r\nAuthorization: ", sig.authorization,
	                             "\r\nContent-Length: ", clen, "\r\n\r\n"};
	c->out.len = 0;
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
		if (hsm_failed(hsm_buf_put_str(&c->out, parts[i])))
			return LG_IO_ERROR;
	if (hsm_failed(hsm_buf_put(&c->out, w->body.data, w->body.len)))
		return LG_IO_ERROR;
	c->sched_ns = sched;
	w->sent++;
	return lg_conn_start(c);
}

static bool in_window(const shared *sh, uint64_t t)
{
	return t >= sh->mstart && t < sh->mend;
}

/* Replaces a broken connection; a connection that cannot be reopened is dropped. */
static void reopen(worker *w, lg_conn *c)
{
	lg_conn_close(c);
	if (hsm_failed(lg_conn_open(c, &w->sh->cfg->dest)))
		return;
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
	if (epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
		lg_conn_close(c);
}

static void on_done(worker *w, lg_conn *c, uint64_t now)
{
	bool counted = in_window(w->sh, c->sched_ns);
	if (c->status == 200) {
		if (counted) {
			w->ok++;
			lg_hist_add(&w->hist, now - c->sched_ns);
			w->last_done_ns = now;
			size_t slot = (size_t)((c->sched_ns - w->sh->mstart) / SLOT_NS);
			uint64_t us = (now - c->sched_ns) / 1000;
			if (slot < w->n_slots && us > w->slot_worst_us[slot])
				w->slot_worst_us[slot] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
		}
	} else if (counted) {
		size_t n = 0;
		const char *body = lg_conn_body(c, &n);
		char what[200];
		snprintf(what, sizeof(what), "HTTP %d: %.*s", c->status, (int)(n < 150 ? n : 150), body);
		note_error(w, what);
	}
	if (c->server_closes)
		reopen(w, c);
}

/* Handles the outcome of an I/O step on c; sends the next request in closed loop. */
static void after_io(worker *w, lg_conn *c, lg_io r)
{
	const shared *sh = w->sh;
	while (r != LG_IO_AGAIN) {
		uint64_t now = hsm_mono_ns();
		if (r == LG_IO_ERROR) {
			if (in_window(sh, c->sched_ns))
				note_error(w, "connection error");
			reopen(w, c);
		} else {
			on_done(w, c, now);
		}
		if (sh->cfg->rate > 0 || now >= sh->mend || c->st != LG_IDLE)
			return;
		r = send_request(w, c, now);
	}
}

/* Constant-rate mode: sends what is due; returns the next time something falls due. */
static uint64_t send_due(worker *w, uint64_t now, uint64_t interval)
{
	uint64_t wake = UINT64_MAX;
	for (unsigned i = 0; i < w->n_conns; i++) {
		lg_conn *c = &w->conns[i];
		if (c->st != LG_IDLE || c->next_ns >= w->sh->mend)
			continue;
		if (c->next_ns <= now) {
			uint64_t due = c->next_ns;
			c->next_ns += interval;
			after_io(w, c, send_request(w, c, due));
			now = hsm_mono_ns();
		}
		if (c->st == LG_IDLE && c->next_ns < w->sh->mend && c->next_ns < wake)
			wake = c->next_ns;
	}
	return wake;
}

/* True while a request of the window is still owed an answer. */
static bool owed(const worker *w, uint64_t interval)
{
	for (unsigned i = 0; i < w->n_conns; i++) {
		const lg_conn *c = &w->conns[i];
		if (c->st == LG_BUSY && in_window(w->sh, c->sched_ns))
			return true;
		if (interval != 0 && c->st != LG_DEAD && c->next_ns < w->sh->mend)
			return true;
	}
	return false;
}

/* At the end of the grace period: requests of the window never answered, or never sent. */
static void count_unanswered(worker *w, uint64_t interval)
{
	for (unsigned i = 0; i < w->n_conns; i++) {
		lg_conn *c = &w->conns[i];
		uint64_t n = 0;
		if (c->st == LG_BUSY && in_window(w->sh, c->sched_ns))
			n++;
		if (interval != 0 && c->st != LG_DEAD && c->next_ns < w->sh->mend)
			n += (w->sh->mend - c->next_ns + interval - 1) / interval;
		if (n > 0) {
			w->incomplete += n;
			note_error(w, "no answer within the drain grace period");
			w->errors += n - 1;
		}
	}
}

static void run_loop(worker *w)
{
	const shared *sh = w->sh;
	const config *cfg = sh->cfg;
	uint64_t interval = cfg->rate > 0 ? (uint64_t)((double)cfg->connections * 1e9 / cfg->rate) : 0;
	struct epoll_event evs[256];
	if (interval == 0)
		for (unsigned i = 0; i < w->n_conns; i++)
			after_io(w, &w->conns[i], send_request(w, &w->conns[i], hsm_mono_ns()));
	for (;;) {
		uint64_t now = hsm_mono_ns(), wake = UINT64_MAX;
		if (interval != 0)
			wake = send_due(w, now, interval);
		now = hsm_mono_ns();
		if (now >= sh->mend && !owed(w, interval))
			break;
		if (now >= sh->mend + DRAIN_GRACE_NS) {
			count_unanswered(w, interval);
			break;
		}
		uint64_t until = wake != UINT64_MAX ? wake : now + NS / 20;
		if (now < sh->mend && until > sh->mend)
			until = sh->mend;
		uint64_t wait = until > now ? until - now : 0;
		struct timespec ts = {(time_t)(wait / NS), (long)(wait % NS)};
		int n = epoll_pwait2(w->ep, evs, 256, &ts, NULL);
		for (int i = 0; i < n; i++) {
			lg_conn *c = evs[i].data.ptr;
			after_io(w, c, lg_conn_pump(c));
		}
	}
}

static hsm_result worker_setup(worker *w)
{
	const config *cfg = w->sh->cfg;
	w->ep = epoll_create1(EPOLL_CLOEXEC);
	HSM_ENSURE(w->ep >= 0, HSM_ERR_IO, "epoll_create1: %s", strerror(errno));
	HSM_GUARD(hsm_sigv4_signer_new(cfg->akid, cfg->secret, "us-east-1", NULL, &w->signer));
	lg_body_state_init(&w->bodies, w->index);
	for (unsigned i = 0; i < w->n_conns; i++) {
		lg_conn *c = &w->conns[i];
		HSM_GUARD(lg_conn_open(c, &cfg->dest));
		struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
		HSM_ENSURE(epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev) == 0, HSM_ERR_IO, "epoll_ctl");
	}
	return HSM_SUCCESS;
}

static void *worker_main(void *arg)
{
	worker *w = arg;
	shared *sh = w->sh;
	if (hsm_failed(worker_setup(w))) {
		fprintf(stderr, "loadgen: %s\n", hsm_last_message());
		w->failed_setup = true;
	}
	pthread_barrier_wait(&sh->ready); /* everyone connected */
	pthread_barrier_wait(&sh->ready); /* the main thread has set the clock */
	w->n_slots = (size_t)((sh->mend - sh->mstart + SLOT_NS - 1) / SLOT_NS);
	w->slot_worst_us = calloc(w->n_slots, sizeof(*w->slot_worst_us));
	if (w->slot_worst_us == NULL)
		w->n_slots = 0;
	if (!w->failed_setup) {
		if (sh->cfg->rate > 0) {
			double per = 1e9 / sh->cfg->rate;
			for (unsigned i = 0; i < w->n_conns; i++)
				w->conns[i].next_ns = sh->t0 + (uint64_t)(per * (double)(w->first_conn + i));
		}
		run_loop(w);
	}
	for (unsigned i = 0; i < w->n_conns; i++)
		lg_conn_close(&w->conns[i]);
	hsm_sigv4_signer_free(w->signer);
	hsm_buf_free(&w->body);
	if (w->ep >= 0)
		close(w->ep);
	return NULL;
}

static double cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/*
 * The slots' worst latencies, all threads merged (into ws[0]'s array), as
 * JSON members: how many slots were slow, and the stalls (start and length
 * in ms from the window's start, worst latency in ms).
 */
static void report_slots(worker *ws, unsigned threads)
{
	uint32_t *worst = ws[0].slot_worst_us;
	size_t n = ws[0].n_slots;
	for (unsigned t = 1; t < threads; t++)
		for (size_t i = 0; i < n && i < ws[t].n_slots; i++)
			if (ws[t].slot_worst_us[i] > worst[i])
				worst[i] = ws[t].slot_worst_us[i];
	size_t slow = 0, stalls = 0;
	for (size_t i = 0; i < n; i++)
		slow += worst[i] > SLOW_US;
	printf(",\"slot_ms\":%llu,\"slots\":%zu,\"slow_slots\":%zu,\"stalls\":[",
	       (unsigned long long)(SLOT_NS / 1000000), n, slow);
	for (size_t i = 0; i < n;) {
		if (worst[i] <= STALL_US) {
			i++;
			continue;
		}
		size_t j = i;
		uint32_t top = 0;
		for (; j < n && worst[j] > STALL_US; j++)
			top = worst[j] > top ? worst[j] : top;
		if (stalls++ < MAX_STALLS)
			printf("%s[%llu,%llu,%.1f]", stalls > 1 ? "," : "",
			       (unsigned long long)(i * SLOT_NS / 1000000),
			       (unsigned long long)((j - i) * SLOT_NS / 1000000), top / 1e3);
		i = j;
	}
	printf("],\"n_stalls\":%zu", stalls);
}

/*
 * Throughput is the window's answered requests over the time they took: the
 * window, or longer when answers kept coming after it (an overloaded server
 * in constant-rate mode), so a backlog drained late does not count as rate.
 */
static void report(const config *cfg, const shared *sh, worker *ws, double cpu)
{
	static lg_hist all;
	uint64_t ok = 0, errors = 0, incomplete = 0, last = sh->mend;
	const char *first = "";
	lg_hist_reset(&all);
	for (unsigned i = 0; i < cfg->threads; i++) {
		lg_hist_merge(&all, &ws[i].hist);
		ok += ws[i].ok;
		errors += ws[i].errors;
		incomplete += ws[i].incomplete;
		if (ws[i].last_done_ns > last)
			last = ws[i].last_done_ns;
		if (*first == '\0')
			first = ws[i].first_error;
	}
	if (*first != '\0')
		fprintf(stderr, "loadgen: %s: first error: %s\n", cfg->label, first);
	printf("{\"label\":\"%s\",\"target\":\"%s\",\"tls\":%s,\"mode\":\"%s\",\"rate\":%.0f,"
	       "\"connections\":%u,\"threads\":%u,\"duration_s\":%.2f,\"ok\":%llu,\"errors\":%llu,"
	       "\"incomplete\":%llu,\"ops_per_s\":%.1f,\"mean_us\":%.1f,\"p50_us\":%.1f,"
	       "\"p90_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f,"
	       "\"client_cpu_cores\":%.3f",
	       cfg->label, cfg->target, cfg->dest.tls ? "true" : "false",
	       cfg->rate > 0 ? "rate" : "closed", cfg->rate, cfg->connections, cfg->threads,
	       cfg->duration_s, (unsigned long long)ok, (unsigned long long)errors,
	       (unsigned long long)incomplete, (double)ok * 1e9 / (double)(last - sh->mstart),
	       lg_hist_mean(&all) / 1e3,
	       (double)lg_hist_quantile(&all, 0.50) / 1e3, (double)lg_hist_quantile(&all, 0.90) / 1e3,
	       (double)lg_hist_quantile(&all, 0.99) / 1e3, (double)lg_hist_quantile(&all, 0.999) / 1e3,
	       (double)all.max_ns / 1e3, cpu / cfg->duration_s);
	if (ws[0].n_slots > 0)
		report_slots(ws, cfg->threads);
	printf("}\n");
}

static int run(config *cfg)
{
	shared sh = {.cfg = cfg};
	worker *ws = calloc(cfg->threads, sizeof(*ws));
	lg_conn *conns = calloc(cfg->connections, sizeof(*conns));
	pthread_t *th = calloc(cfg->threads, sizeof(*th));
	if (ws == NULL || conns == NULL || th == NULL)
		return 1;
	for (unsigned i = 0; i < cfg->connections; i++)
		conns[i].fd = -1;
	/*
	 * A sleeping thread's timer may fire up to its timer slack late (50 us
	 * by default), and in constant-rate mode a request sent late is charged
	 * to the server from its due time.  The workers inherit the main
	 * thread's slack.
	 */
	(void)prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
	pthread_barrier_init(&sh.ready, NULL, cfg->threads + 1);
	for (unsigned i = 0, next = 0; i < cfg->threads; i++) {
		unsigned share = cfg->connections / cfg->threads + (i < cfg->connections % cfg->threads);
		ws[i] = (worker){.sh = &sh, .index = i, .first_conn = next, .n_conns = share,
		                 .conns = conns + next, .ep = -1};
		next += share;
		if (pthread_create(&th[i], NULL, worker_main, &ws[i]) != 0)
			return 1;
	}
	pthread_barrier_wait(&sh.ready);
	sh.t0 = hsm_mono_ns();
	sh.mstart = sh.t0 + (uint64_t)(cfg->warmup_s * 1e9);
	sh.mend = sh.mstart + (uint64_t)(cfg->duration_s * 1e9);
	pthread_barrier_wait(&sh.ready);
	/* Client CPU over the recorded window, sampled by this otherwise idle thread. */
	struct timespec ws_ts = {(time_t)cfg->warmup_s, (long)((cfg->warmup_s - (double)(time_t)cfg->warmup_s) * 1e9)};
	nanosleep(&ws_ts, NULL);
	double c0 = cpu_seconds();
	struct timespec d_ts = {(time_t)cfg->duration_s, (long)((cfg->duration_s - (double)(time_t)cfg->duration_s) * 1e9)};
	nanosleep(&d_ts, NULL);
	double cpu = cpu_seconds() - c0;
	bool failed = false;
	for (unsigned i = 0; i < cfg->threads; i++) {
		pthread_join(th[i], NULL);
		failed |= ws[i].failed_setup;
	}
	if (!failed)
		report(cfg, &sh, ws, cpu);
	for (unsigned i = 0; i < cfg->threads; i++)
		free(ws[i].slot_worst_us);
	pthread_barrier_destroy(&sh.ready);
	free(th);
	free(conns);
	free(ws);
	return failed ? 1 : 0;
}


/* ---- options ---------------------------------------------------------------- */

static int usage(void)
{
	fprintf(stderr,
	        "usage: loadgen --url http[s]://HOST:PORT --op OPERATION --body JSON|@FILE\n"
	        "               [--key ID|@FILE ...] [--random-keys] [--connections N]\n"
	        "               [--threads T] [--duration S] [--warmup S] [--rate R]\n"
	        "               [--cafile PEM] [--label NAME]\n"
	        "Credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.\n");
	return 2;
}

static hsm_result parse_url(config *cfg)
{
	const char *u = cfg->url, *hostport;
	bool tls = hsm_str_has_prefix(u, "https://");
	HSM_ENSURE(tls || hsm_str_has_prefix(u, "http://"), HSM_ERR_VALIDATION,
	           "the URL must start with http:// or https://");
	hostport = u + (tls ? 8 : 7);
	char host[256];
	const char *colon = strrchr(hostport, ':');
	HSM_ENSURE(colon != NULL && (size_t)(colon - hostport) < sizeof(host), HSM_ERR_VALIDATION,
	           "the URL must name a host and a port");
	memcpy(host, hostport, (size_t)(colon - hostport));
	host[colon - hostport] = '\0';
	char port[16];
	snprintf(port, sizeof(port), "%.*s", (int)strcspn(colon + 1, "/"), colon + 1);
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	HSM_ENSURE(getaddrinfo(host, port, &hints, &ai) == 0 && ai != NULL, HSM_ERR_VALIDATION,
	           "cannot resolve %s", host);
	memcpy(&cfg->dest.addr, ai->ai_addr, ai->ai_addrlen);
	cfg->dest.addr_len = ai->ai_addrlen;
	freeaddrinfo(ai);
	snprintf(cfg->dest.host_header, sizeof(cfg->dest.host_header), "%s:%s", host, port);
	if (!tls)
		return HSM_SUCCESS;
	cfg->dest.tls = SSL_CTX_new(TLS_client_method());
	HSM_ENSURE(cfg->dest.tls != NULL, HSM_ERR_NOMEM, "SSL_CTX_new");
	SSL_CTX_set_min_proto_version(cfg->dest.tls, TLS1_2_VERSION);
	/* One read() per response instead of two (a record's 5-byte header,
	 * then its body): the load generator shares the cores with hsmd, and
	 * every system call it saves is CPU hsmd gets.  A response is complete
	 * before the next request is sent, so nothing is left buffered inside
	 * OpenSSL where epoll cannot see it. */
	SSL_CTX_set_read_ahead(cfg->dest.tls, 1);
	if (cfg->cafile != NULL) {
		HSM_ENSURE(SSL_CTX_load_verify_locations(cfg->dest.tls, cfg->cafile, NULL) == 1,
		           HSM_ERR_VALIDATION, "cannot load %s", cfg->cafile);
		SSL_CTX_set_verify(cfg->dest.tls, SSL_VERIFY_PEER, NULL);
	}
	return HSM_SUCCESS;
}

static hsm_result parse_number(const char *s, double min, double max, double *out)
{
	char *end = NULL;
	errno = 0;
	double v = strtod(s, &end);
	HSM_ENSURE(errno == 0 && end != s && *end == '\0' && v >= min && v <= max,
	           HSM_ERR_VALIDATION, "%s is not a number in [%g, %g]", s, min, max);
	*out = v;
	return HSM_SUCCESS;
}

static hsm_result parse_args(int argc, char **argv, config *cfg)
{
	static const struct option longopts[] = {
	    {"url", required_argument, NULL, 'u'},      {"op", required_argument, NULL, 'o'},
	    {"body", required_argument, NULL, 'b'},     {"key", required_argument, NULL, 'k'},
	    {"random-keys", no_argument, NULL, 'r'},    {"connections", required_argument, NULL, 'c'},
	    {"threads", required_argument, NULL, 't'},  {"duration", required_argument, NULL, 'd'},
	    {"warmup", required_argument, NULL, 'w'},   {"rate", required_argument, NULL, 'R'},
	    {"cafile", required_argument, NULL, 'C'},   {"label", required_argument, NULL, 'l'},
	    {NULL, 0, NULL, 0}};
	double conns = 32, threads = 1;
	const char *op = NULL, *body = NULL;
	cfg->duration_s = 5;
	cfg->warmup_s = 1;
	for (int o; (o = getopt_long(argc, argv, "", longopts, NULL)) != -1;) {
		switch (o) {
		case 'u': cfg->url = optarg; break;
		case 'o': op = optarg; break;
		case 'b': body = optarg; break;
		case 'k': HSM_GUARD(lg_body_add_keys(&cfg->body, optarg)); break;
		case 'r': cfg->body.random = true; break;
		case 'c': HSM_GUARD(parse_number(optarg, 1, MAX_CONNECTIONS, &conns)); break;
		case 't': HSM_GUARD(parse_number(optarg, 1, MAX_THREADS, &threads)); break;
		case 'd': HSM_GUARD(parse_number(optarg, 0.1, 3600, &cfg->duration_s)); break;
		case 'w': HSM_GUARD(parse_number(optarg, 0, 600, &cfg->warmup_s)); break;
		case 'R': HSM_GUARD(parse_number(optarg, 0, 1e8, &cfg->rate)); break;
		case 'C': cfg->cafile = optarg; break;
		case 'l': cfg->label = optarg; break;
		default: return HSM_FAIL(HSM_ERR_VALIDATION, "unknown option");
		}
	}
	HSM_ENSURE(cfg->url != NULL && op != NULL && body != NULL, HSM_ERR_VALIDATION,
	           "--url, --op and --body are required");
	cfg->connections = (unsigned)conns;
	cfg->threads = (unsigned)threads;
	HSM_ENSURE(cfg->threads <= cfg->connections, HSM_ERR_VALIDATION,
	           "need at least one connection per thread");
	snprintf(cfg->target, sizeof(cfg->target), "TrentService.%s", op);
	if (cfg->label == NULL)
		cfg->label = op;
	HSM_GUARD(lg_body_load_template(&cfg->body, body));
	HSM_GUARD(lg_body_finish(&cfg->body));
	cfg->akid = getenv("AWS_ACCESS_KEY_ID");
	const char *secret = getenv("AWS_SECRET_ACCESS_KEY");
	HSM_ENSURE(cfg->akid != NULL && secret != NULL, HSM_ERR_MISSING_AUTH,
	           "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
	HSM_GUARD(hsm_secret_from(secret, strlen(secret), &cfg->secret));
	return parse_url(cfg);
}

int main(int argc, char **argv)
{
	static config cfg;
	if (hsm_failed(parse_args(argc, argv, &cfg))) {
		fprintf(stderr, "loadgen: %s\n", hsm_last_message());
		return usage();
	}
	int rc = run(&cfg);
	lg_body_free(&cfg.body);
	hsm_secret_free(cfg.secret);
	SSL_CTX_free(cfg.dest.tls);
	return rc;
}
