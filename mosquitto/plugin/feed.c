/*
 * feed: follow Django's change feed; see feed.h and README.md ("Change feed").
 *
 * Threads: the follower thread owns f->curl and only ever touches the shared part of
 * struct feed under f->lock. It never calls the broker API (not even mosquitto_log_printf:
 * with `log_dest topic` a log line is a message the broker queues, from its own thread
 * only); what it has to say waits in f->err for the next tick.
 */
#include "feed.h"

#include <errno.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>
#include <curl/curl.h>

#define LOG_PREFIX "auth_http: change feed: "
#define STR_(x) #x
#define STR(x) STR_(x)
#define FEED_AGENT "User-Agent: mosquitto-" STR(LIBMOSQUITTO_MAJOR) "." STR(LIBMOSQUITTO_MINOR) "." STR(LIBMOSQUITTO_REVISION) " auth_http-feed"
/* Up to 1,000 changes per answer: far below this. */
#define FEED_MAX_BODY (1024 * 1024)
#define BACKOFF_MAX 30
#define LOG_MAX 200

enum item_kind { KICK_USER, KICK_CLIENT };

struct item {
	struct item *next;
	enum item_kind kind;
	char *name;
	char *why;
};

struct body {
	char *data;
	size_t len;
	bool overflow;
};

struct feed {
	/* Set once before the thread starts, then read-only. */
	char *url;          /* base URL with ?wait=..&name=.. */
	char *userpwd;
	char *ca_file;
	bool with_tls, verify_peer;
	long connect_timeout, wait;
	feed_clear_fn clear;
	void *ctx;

	/* The follower thread's own. */
	pthread_t thread;
	CURL *curl;
	struct curl_slist *headers;
	long long seq;
	bool have_seq;

	/* Shared, under lock. */
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool stop;
	bool clear_pending;
	double settle;           /* seconds: clear once more this long after a change */
	struct item *head, *tail;
	char err[256];           /* the latest error, "" when the last poll worked */
	unsigned long errors;    /* failed polls since the last good one */
	long long seen_seq;

	/* The broker thread's own. */
	double settle_at;        /* monotonic seconds; 0: no second clear pending */
	bool reported_failing;
	bool reported_following;
};

static double mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *fmt(const char *format, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *format, ...)
{
	va_list ap;
	va_start(ap, format);
	int n = vsnprintf(NULL, 0, format, ap);
	va_end(ap);
	if(n < 0) return NULL;
	char *s = malloc((size_t)n + 1);
	if(!s) return NULL;
	va_start(ap, format);
	vsnprintf(s, (size_t)n + 1, format, ap);
	va_end(ap);
	return s;
}

static void items_free(struct item *it)
{
	while(it){
		struct item *next = it->next;
		free(it->name);
		free(it->why);
		free(it);
		it = next;
	}
}

/* ------------------------------------------------------------ follower thread */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct body *b = userdata;
	size_t n = size * nmemb;
	if(b->overflow || b->len + n > FEED_MAX_BODY){ b->overflow = true; return n; }
	char *d = realloc(b->data, b->len + n + 1);
	if(!d){ b->overflow = true; return n; }
	memcpy(d + b->len, ptr, n);
	b->len += n;
	d[b->len] = '\0';
	b->data = d;
	return n;
}

/* libcurl calls this at least once a second during a transfer: a held poll ends soon
 * after feed_stop() asks. */
static int on_progress(void *userdata, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	struct feed *f = userdata;
	(void)dt; (void)dn; (void)ut; (void)un;
	pthread_mutex_lock(&f->lock);
	bool stop = f->stop;
	pthread_mutex_unlock(&f->lock);
	return stop ? 1 : 0;
}

static void set_error(struct feed *f, const char *what)
{
	pthread_mutex_lock(&f->lock);
	snprintf(f->err, sizeof(f->err), "%s", what);
	f->errors++;
	pthread_mutex_unlock(&f->lock);
}

static const char *str_item(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsString(v) && v->valuestring ? v->valuestring : "";
}

static struct item *item_new(enum item_kind kind, const char *name, const char *why)
{
	struct item *it = calloc(1, sizeof(*it));
	if(!it) return NULL;
	it->kind = kind;
	it->name = strdup(name);
	it->why = strdup(why);
	if(!it->name || !it->why){ items_free(it); return NULL; }
	return it;
}

/* The kicks an answer asks for, or false when the answer is unreadable. */
static bool parse_changes(const cJSON *changes, struct item **head, struct item **tail)
{
	const cJSON *c;
	cJSON_ArrayForEach(c, changes){
		if(!cJSON_IsObject(c)) return false;
		if(!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "kick"))) continue;
		const char *scope = str_item(c, "scope");
		const char *why = str_item(c, "why");
		struct item *it = NULL;
		if(!strcmp(scope, "account") && *str_item(c, "username")){
			it = item_new(KICK_USER, str_item(c, "username"), why);
		}else if(!strcmp(scope, "client") && *str_item(c, "client_id")){
			it = item_new(KICK_CLIENT, str_item(c, "client_id"), why);
		}else{
			continue;
		}
		if(!it) return false;
		if(*tail) (*tail)->next = it; else *head = it;
		*tail = it;
	}
	return true;
}

/* Hand one good answer to the broker thread. */
static bool apply_answer(struct feed *f, const struct body *b)
{
	cJSON *root = cJSON_ParseWithLength(b->data, b->len);
	const cJSON *seq = cJSON_GetObjectItemCaseSensitive(root, "seq");
	const cJSON *reset = cJSON_GetObjectItemCaseSensitive(root, "reset");
	const cJSON *settle = cJSON_GetObjectItemCaseSensitive(root, "settle");
	const cJSON *changes = cJSON_GetObjectItemCaseSensitive(root, "changes");
	struct item *head = NULL, *tail = NULL;
	bool ok = cJSON_IsObject(root) && cJSON_IsNumber(seq) && seq->valuedouble >= 0
		&& cJSON_IsBool(reset) && cJSON_IsArray(changes)
		&& parse_changes(changes, &head, &tail);
	if(!ok){
		items_free(head);
		cJSON_Delete(root);
		return false;
	}
	bool changed = cJSON_IsTrue(reset) || cJSON_GetArraySize(changes) > 0;
	f->seq = (long long)seq->valuedouble;
	f->have_seq = true;
	pthread_mutex_lock(&f->lock);
	if(changed){
		f->clear_pending = true;
		if(cJSON_IsNumber(settle) && settle->valuedouble > 0 && settle->valuedouble < 3600){
			f->settle = settle->valuedouble;
		}
	}
	if(head){
		if(f->tail) f->tail->next = head; else f->head = head;
		f->tail = tail;
	}
	f->err[0] = '\0';
	f->errors = 0;
	f->seen_seq = f->seq;
	pthread_mutex_unlock(&f->lock);
	cJSON_Delete(root);
	return true;
}

static bool poll_once(struct feed *f)
{
	char *url = f->have_seq ? fmt("%s&after=%lld", f->url, f->seq) : fmt("%s", f->url);
	struct body b = {0};
	char what[200];
	bool ok = false;
	if(!url){ set_error(f, "out of memory"); return false; }
	curl_easy_setopt(f->curl, CURLOPT_URL, url);
	curl_easy_setopt(f->curl, CURLOPT_WRITEDATA, &b);
	CURLcode cc = curl_easy_perform(f->curl);
	long status = 0;
	if(cc == CURLE_OK) curl_easy_getinfo(f->curl, CURLINFO_RESPONSE_CODE, &status);
	if(cc == CURLE_ABORTED_BY_CALLBACK){
		ok = true; /* stopping */
	}else if(cc != CURLE_OK){
		snprintf(what, sizeof(what), "request failed: %s", curl_easy_strerror(cc));
		set_error(f, what);
	}else if(status != 200 || b.overflow || !b.data){
		snprintf(what, sizeof(what), "HTTP %ld%s", status, b.overflow ? ", body too large" : "");
		set_error(f, what);
	}else if(!apply_answer(f, &b)){
		set_error(f, "unreadable answer");
	}else{
		ok = true;
	}
	curl_easy_setopt(f->curl, CURLOPT_WRITEDATA, NULL);
	free(b.data);
	free(url);
	return ok;
}

/* Sleep `seconds` unless feed_stop() wakes us; true when stopping. */
static bool pause_unless_stopped(struct feed *f, long seconds)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += seconds;
	pthread_mutex_lock(&f->lock);
	while(!f->stop){
		if(pthread_cond_timedwait(&f->wake, &f->lock, &until) == ETIMEDOUT) break;
	}
	bool stop = f->stop;
	pthread_mutex_unlock(&f->lock);
	return stop;
}

static bool stopping(struct feed *f)
{
	pthread_mutex_lock(&f->lock);
	bool stop = f->stop;
	pthread_mutex_unlock(&f->lock);
	return stop;
}

static void *follow(void *arg)
{
	struct feed *f = arg;
	long backoff = 0;
	while(!stopping(f)){
		if(poll_once(f)){
			backoff = 0;
			continue;
		}
		/* A failing feed must not become a busy loop against a failing web app. While it
		 * fails, decisions still expire after the cache TTL, as without a feed; the first
		 * good answer after the outage is a reset if the feed moved on too far. */
		backoff = backoff ? (backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : backoff * 2) : 1;
		if(pause_unless_stopped(f, backoff)) break;
	}
	return NULL;
}

/* ------------------------------------------------------------- broker thread */

static void report(struct feed *f, const char *err, unsigned long errors, long long seq)
{
	if(*err && errors >= 2 && !f->reported_failing){
		/* One failure is a web restart; say so from the second. */
		mosquitto_log_printf(MOSQ_LOG_WARNING, LOG_PREFIX "%.*s; retrying with back-off, "
				"revocations wait for the cache TTL meanwhile", LOG_MAX, err);
		f->reported_failing = true;
		f->reported_following = false;
	}else if(!*err && !f->reported_following && seq >= 0){
		mosquitto_log_printf(MOSQ_LOG_INFO, LOG_PREFIX "following at seq %lld", seq);
		f->reported_following = true;
		f->reported_failing = false;
	}
}

static void kick(const struct item *it)
{
	if(it->kind == KICK_USER){
		mosquitto_log_printf(MOSQ_LOG_INFO, LOG_PREFIX "disconnecting the sessions of user '%.*s' (%.*s)",
				LOG_MAX, it->name, LOG_MAX, it->why);
		mosquitto_kick_client_by_username(it->name, false);
	}else{
		mosquitto_log_printf(MOSQ_LOG_INFO, LOG_PREFIX "disconnecting client '%.*s' (%.*s)",
				LOG_MAX, it->name, LOG_MAX, it->why);
		mosquitto_kick_client_by_clientid(it->name, false);
	}
}

void feed_tick(struct feed *f)
{
	if(!f) return;
	char err[sizeof(f->err)];
	pthread_mutex_lock(&f->lock);
	struct item *items = f->head;
	bool clear = f->clear_pending;
	double settle = f->settle;
	unsigned long errors = f->errors;
	long long seq = f->seen_seq;
	memcpy(err, f->err, sizeof(err));
	f->head = f->tail = NULL;
	f->clear_pending = false;
	pthread_mutex_unlock(&f->lock);

	double now = mono();
	if(clear){
		/* Caches first: a kicked client that reconnects at once must be asked about. */
		f->clear(f->ctx);
		/* The web processes may answer from their own policy cache for `settle` seconds
		 * after the change; what the broker cached from them meanwhile goes then. */
		f->settle_at = now + settle;
	}else if(f->settle_at > 0 && now >= f->settle_at){
		f->clear(f->ctx);
		f->settle_at = 0;
	}
	for(const struct item *it = items; it; it = it->next) kick(it);
	items_free(items);
	report(f, err, errors, seq);
}

/* ------------------------------------------------------------------ lifecycle */

static bool parse_wait(const char *v, long *out)
{
	char *end = NULL;
	long n = strtol(v, &end, 10);
	if(!*v || *end || n < 1 || n > 30){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "http_changes_wait must be 1 to 30 seconds, not '%s'", v);
		return false;
	}
	*out = n;
	return true;
}

static int curl_prepare(struct feed *f)
{
	CURL *c = f->curl = curl_easy_init();
	struct curl_slist *h = f->headers = curl_slist_append(NULL, FEED_AGENT);
	if(!c || !h) return MOSQ_ERR_NOMEM;
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, f->connect_timeout);
	/* The hold, plus time for the answer. */
	curl_easy_setopt(c, CURLOPT_TIMEOUT, f->wait + f->connect_timeout + 5);
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, f);
	if(f->userpwd){
		curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(c, CURLOPT_USERPWD, f->userpwd);
	}
	if(f->with_tls){
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, f->verify_peer ? 1L : 0L);
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, f->verify_peer ? 2L : 0L);
		if(f->ca_file) curl_easy_setopt(c, CURLOPT_CAINFO, f->ca_file);
	}
	return MOSQ_ERR_SUCCESS;
}

static void feed_free(struct feed *f)
{
	if(f->curl) curl_easy_cleanup(f->curl);
	curl_slist_free_all(f->headers);
	items_free(f->head);
	free(f->url);
	free(f->userpwd);
	free(f->ca_file);
	pthread_mutex_destroy(&f->lock);
	pthread_cond_destroy(&f->wake);
	free(f);
}

static char *build_url(CURL *curl, const struct feed_http *http, const char *uri, long wait, const char *name)
{
	char host[256] = "";
	if(!name || !*name){
		if(gethostname(host, sizeof(host) - 1) != 0) snprintf(host, sizeof(host), "mosquitto");
		name = host;
	}
	char *esc = curl_easy_escape(curl, name, (int)strlen(name));
	if(!esc) return NULL;
	char *url = fmt("%s%s%swait=%ld&name=%s", http->scheme_host_port, uri,
			strchr(uri, '?') ? "&" : "?", wait, esc);
	curl_free(esc);
	return url;
}

int feed_start(struct feed **out, const struct feed_http *http,
		struct mosquitto_opt *opts, int count, feed_clear_fn clear, void *ctx)
{
	const char *uri = NULL, *name = NULL;
	long wait = 15;
	*out = NULL;
	for(int i = 0; i < count; i++){
		const char *k = opts[i].key, *v = opts[i].value;
		if(!k || !v) continue;
		if(!strcmp(k, "http_changes_uri")) uri = *v ? v : NULL;
		else if(!strcmp(k, "http_changes_name")) name = v;
		else if(!strcmp(k, "http_changes_wait") && !parse_wait(v, &wait)) return MOSQ_ERR_INVAL;
	}
	if(!uri) return MOSQ_ERR_SUCCESS;

	struct feed *f = calloc(1, sizeof(*f));
	if(!f) return MOSQ_ERR_NOMEM;
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->wake, NULL);
	f->wait = wait;
	f->connect_timeout = http->connect_timeout;
	f->with_tls = http->with_tls;
	f->verify_peer = http->verify_peer;
	f->clear = clear;
	f->ctx = ctx;
	f->seen_seq = -1;
	f->settle = 1.0;
	f->userpwd = http->userpwd ? strdup(http->userpwd) : NULL;
	f->ca_file = http->ca_file ? strdup(http->ca_file) : NULL;
	int rc = curl_prepare(f);
	if(rc == MOSQ_ERR_SUCCESS){
		f->url = build_url(f->curl, http, uri, wait, name);
		if(!f->url || (http->userpwd && !f->userpwd) || (http->ca_file && !f->ca_file)) rc = MOSQ_ERR_NOMEM;
	}
	if(rc == MOSQ_ERR_SUCCESS && pthread_create(&f->thread, NULL, follow, f) != 0) rc = MOSQ_ERR_UNKNOWN;
	if(rc != MOSQ_ERR_SUCCESS){
		feed_free(f);
		return rc;
	}
	mosquitto_log_printf(MOSQ_LOG_INFO, LOG_PREFIX "following %s (wait %lds)", f->url, wait);
	*out = f;
	return MOSQ_ERR_SUCCESS;
}

void feed_stop(struct feed *f)
{
	if(!f) return;
	pthread_mutex_lock(&f->lock);
	f->stop = true;
	pthread_cond_signal(&f->wake);
	pthread_mutex_unlock(&f->lock);
	pthread_join(f->thread, NULL);
	feed_free(f);
}
