/*
 * The circuit breaker (breaker.h). The event loop never waits for a probe: while the breaker is
 * open it answers from stale-if-error or with an error at once, and only the probe thread talks
 * to the backend, one request per interval. The thread calls no broker API (the broker is not
 * thread-safe): state changes are logged by the event loop through breaker_changed().
 */
#include "breaker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double breaker_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct timespec abs_time(double t)
{
	struct timespec ts;
	ts.tv_sec = (time_t)t;
	ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
	return ts;
}

static size_t discard(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	(void)ptr;
	(void)userdata;
	return size * nmemb;
}

/* Any answer but a 5xx (or a 3xx) is a backend that works: a 4xx deny is an answer too. */
static bool probe(struct breaker *b)
{
	long status = 0;
	curl_easy_setopt(b->curl, CURLOPT_URL, b->probe_url);
	curl_easy_setopt(b->curl, CURLOPT_POSTFIELDS, b->probe_body);
	curl_easy_setopt(b->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(b->probe_body));
	curl_easy_setopt(b->curl, CURLOPT_WRITEFUNCTION, discard);
	if(curl_easy_perform(b->curl) != CURLE_OK) return false;
	curl_easy_getinfo(b->curl, CURLINFO_RESPONSE_CODE, &status);
	return (status >= 200 && status < 300) || (status >= 400 && status < 500);
}

static void *probe_loop(void *arg)
{
	struct breaker *b = arg;
	pthread_mutex_lock(&b->lock);
	while(!b->stopping){
		if(b->state == BREAKER_CLOSED){
			pthread_cond_wait(&b->wake, &b->lock);
			continue;
		}
		double now = breaker_now();
		if(now < b->retry_at){
			struct timespec until = abs_time(b->retry_at);
			pthread_cond_timedwait(&b->wake, &b->lock, &until);
			continue;
		}
		pthread_mutex_unlock(&b->lock);
		bool ok = probe(b);
		pthread_mutex_lock(&b->lock);
		now = breaker_now();
		if(ok){
			b->state = BREAKER_CLOSED;
			b->closed_at = now;
		}else{
			b->probes_failed++;
			b->interval = b->interval * 2 > b->max_interval ? b->max_interval : b->interval * 2;
			b->retry_at = now + b->interval;
		}
	}
	pthread_mutex_unlock(&b->lock);
	return NULL;
}

int breaker_start(struct breaker *b, double min_interval, double max_interval,
		CURL *curl, char *probe_url, char *probe_body)
{
	pthread_condattr_t attr;
	memset(b, 0, sizeof(*b));
	b->min_interval = min_interval;
	b->max_interval = max_interval < min_interval ? min_interval : max_interval;
	b->interval = min_interval;
	b->curl = curl;
	b->probe_url = probe_url;
	b->probe_body = probe_body;
	b->closed_at = -1e9;
	pthread_mutex_init(&b->lock, NULL);
	pthread_condattr_init(&attr);
	/* retry_at is monotonic: a wall-clock jump must not stretch or skip an interval. */
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&b->wake, &attr);
	pthread_condattr_destroy(&attr);
	if(min_interval <= 0) return 0;
	int rc = pthread_create(&b->thread, NULL, probe_loop, b);
	if(rc) return rc;
	b->thread_started = true;
	return 0;
}

void breaker_stop(struct breaker *b)
{
	pthread_mutex_lock(&b->lock);
	b->stopping = true;
	pthread_cond_signal(&b->wake);
	pthread_mutex_unlock(&b->lock);
	/* A probe in flight ends within the backend timeout. */
	if(b->thread_started) pthread_join(b->thread, NULL);
	b->thread_started = false;
	if(b->curl) curl_easy_cleanup(b->curl);
	free(b->probe_url);
	free(b->probe_body);
	b->curl = NULL;
	b->probe_url = b->probe_body = NULL;
	pthread_cond_destroy(&b->wake);
	pthread_mutex_destroy(&b->lock);
}

bool breaker_allows(struct breaker *b)
{
	if(!b->thread_started) return true;
	pthread_mutex_lock(&b->lock);
	bool closed = b->state == BREAKER_CLOSED;
	pthread_mutex_unlock(&b->lock);
	return closed;
}

void breaker_failed(struct breaker *b)
{
	if(!b->thread_started) return;
	pthread_mutex_lock(&b->lock);
	if(b->state == BREAKER_CLOSED){
		double now = breaker_now();
		/* Failing again soon after a probe said "back" (a backend that answers the probe but
		 * not the real calls): keep growing the interval instead of starting over. */
		if(now - b->closed_at > b->max_interval) b->interval = b->min_interval;
		else b->interval = b->interval * 2 > b->max_interval ? b->max_interval : b->interval * 2;
		b->state = BREAKER_OPEN;
		b->retry_at = now + b->interval;
		pthread_cond_signal(&b->wake);
	}
	pthread_mutex_unlock(&b->lock);
}

bool breaker_changed(struct breaker *b, enum breaker_state *state, double *interval,
		unsigned long *probes_failed)
{
	if(!b->thread_started) return false;
	pthread_mutex_lock(&b->lock);
	bool changed = b->state != b->logged_state;
	*state = b->logged_state = b->state;
	*interval = b->interval;
	*probes_failed = b->probes_failed;
	if(changed && b->state == BREAKER_CLOSED) b->probes_failed = 0;
	pthread_mutex_unlock(&b->lock);
	return changed;
}
