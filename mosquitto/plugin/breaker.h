/*
 * A circuit breaker for the backend: after an error or a timeout the broker's event loop stops
 * asking for a growing interval, and a thread of its own probes until the backend answers.
 */
#ifndef AUTH_HTTP_BREAKER_H
#define AUTH_HTTP_BREAKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <curl/curl.h>

enum breaker_state { BREAKER_CLOSED, BREAKER_OPEN };

struct breaker {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	pthread_t thread;
	bool thread_started;
	bool stopping;
	enum breaker_state state;
	double min_interval;  /* seconds; 0 turns the breaker off */
	double max_interval;
	double interval;      /* the current one, doubling while the backend stays away */
	double retry_at;      /* monotonic seconds: when the probe thread asks next */
	double closed_at;     /* when the last probe succeeded */
	unsigned long probes_failed;
	/* The probe: one small request on a handle of its own (the event loop owns the other). */
	CURL *curl;
	char *probe_url;
	char *probe_body;
	/* Seen by the event loop only: a state change to log from the broker's thread. */
	enum breaker_state logged_state;
};

/* Monotonic seconds. */
double breaker_now(void);

/* Set up; `curl` is a configured handle the breaker owns from now on (freed in
 * breaker_stop). Starts the probe thread unless min_interval is 0. Returns 0 or an errno. */
int breaker_start(struct breaker *b, double min_interval, double max_interval,
		CURL *curl, char *probe_url, char *probe_body);
void breaker_stop(struct breaker *b);

/* Called from the event loop before an HTTP call: false while the breaker is open. */
bool breaker_allows(struct breaker *b);
/* Called from the event loop after a backend error or timeout: open (or keep open). */
void breaker_failed(struct breaker *b);
/* Called from the event loop: the state changed since the last call (to log it there, as the
 * broker API must not be called from the probe thread). Sets *interval to the open interval. */
bool breaker_changed(struct breaker *b, enum breaker_state *state, double *interval,
		unsigned long *probes_failed);

#endif
