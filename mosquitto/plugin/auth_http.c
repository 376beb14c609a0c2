/*
 * auth_http: a Mosquitto 2.0 auth plugin (plugin API version 5) speaking the
 * mosquitto-go-auth HTTP backend contract and reading the same option names.
 *
 * Every callback runs in the broker's single event loop, so each HTTP call
 * blocks every client of the broker: keep the timeout short and the backend
 * fast. See README.md for options and the differences from go-auth.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cJSON.h>
#include <curl/curl.h>
#include <openssl/sha.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "breaker.h"
#include "limiter.h"
#include "feed.h"

#define LOG_PREFIX "auth_http: "
#define STR_(x) #x
#define STR(x) STR_(x)
#define USER_AGENT "User-Agent: mosquitto-" STR(LIBMOSQUITTO_MAJOR) "." STR(LIBMOSQUITTO_MINOR) "." STR(LIBMOSQUITTO_REVISION)
/* Log at most this many bytes of user-controlled strings. */
#define LOG_MAX 200
/* A backend answer larger than this is treated as an error. */
#define MAX_BODY (64 * 1024)
/* Keys longer than this (e.g. giant topics) are never cached. */
#define MAX_CACHE_KEY 4096
#define CACHE_BUCKETS 4096

enum params_mode { PARAMS_JSON, PARAMS_FORM };
enum response_mode { RESP_STATUS, RESP_JSON, RESP_TEXT };
enum verdict { V_ALLOW, V_DENY, V_ERROR };

struct cache_entry {
	struct cache_entry *next;
	unsigned char *key;
	size_t key_len;
	uint64_t hash;
	/* Monotonic milliseconds (now_ms). */
	int64_t expires;     /* fresh until then (the TTL) */
	int64_t stale_until; /* reused while the backend fails until then (stale-if-error) */
	int64_t used;        /* last answered from or confirmed by the backend: eviction order */
	enum verdict verdict;
};

/* What the cache knows about a key: nothing, a fresh decision, or a stale one. */
struct cached {
	bool found;
	bool fresh;
	enum verdict verdict;
};

struct cache {
	struct cache_entry *buckets[CACHE_BUCKETS];
	size_t count;
	size_t max_entries;
};

struct body_buf {
	char *data;
	size_t len;
	bool overflow;
};

struct config {
	char *scheme_host_port; /* "https://host:port" */
	char *userpwd;          /* "user:secret" for HTTP Basic, or NULL */
	char *getuser_url;
	char *acl_url;
	char *superuser_url;    /* NULL when http_superuser_uri is unset */
	char *method;           /* "POST", "GET" or "PUT" */
	char *ca_file;
	enum params_mode params;
	enum response_mode response;
	double timeout;          /* seconds, the whole request */
	double connect_timeout;  /* seconds, the TCP (and TLS) connect */
	bool with_tls;
	bool verify_peer;
	long login_ttl;
	long acl_ttl;
	long stale_if_error;     /* seconds a decision outlives its TTL while the backend fails */
	double breaker_min;      /* seconds; 0: no breaker */
	double breaker_max;
	long limit_address;      /* refused logins per source address per window; 0: off */
	long limit_username;     /* the same per username (when the backend's hint allows) */
	long limit_window;
	long limit_max_entries;
};

struct plugin_state {
	mosquitto_plugin_id_t *id;
	struct config cfg;
	CURL *curl;
	struct curl_slist *headers; /* the same for every call: built once */
	struct cache login_cache;
	struct cache acl_cache;
	struct breaker breaker;
	struct limiter address_limiter;
	struct limiter username_limiter;
	unsigned long stale_served; /* decisions reused while the backend failed, for the log */
	bool breaker_started;
	struct feed *feed; /* NULL unless http_changes_uri is set (feed.c) */
};

static struct plugin_state *g_state;

/* ---------------------------------------------------------------- options */

static bool parse_bool(const char *v)
{
	return v && (!strcasecmp(v, "true") || !strcmp(v, "1") || !strcasecmp(v, "yes") || !strcasecmp(v, "on"));
}

static bool parse_long(const char *key, const char *v, long min, long *out)
{
	char *end = NULL;
	long n = strtol(v, &end, 10);
	if(!*v || *end || n < min){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "invalid value for %s: '%s'", key, v);
		return false;
	}
	*out = n;
	return true;
}

/* Seconds, decimals allowed ("1.5"); at least `min`. */
static bool parse_seconds(const char *key, const char *v, double min, double *out)
{
	char *end = NULL;
	double n = strtod(v, &end);
	if(!*v || *end || !(n >= min) || n > 86400){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "invalid value for %s: '%s'", key, v);
		return false;
	}
	*out = n;
	return true;
}

static char *xstrdup(const char *s)
{
	return s ? strdup(s) : NULL;
}

/* Returns a malloc'd string formatted like printf, or NULL on OOM. */
static char *aprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if(n < 0) return NULL;
	char *s = malloc((size_t)n + 1);
	if(!s) return NULL;
	va_start(ap, fmt);
	vsnprintf(s, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return s;
}

static void config_free(struct config *c)
{
	free(c->scheme_host_port);
	free(c->userpwd);
	free(c->getuser_url);
	free(c->acl_url);
	free(c->superuser_url);
	free(c->method);
	free(c->ca_file);
	memset(c, 0, sizeof(*c));
}

/* "user:secret@host" -> userpwd "user:secret" (percent-decoded), host "host". */
static int split_userinfo(CURL *curl, const char *host_opt, char **host, char **userpwd)
{
	const char *at = strrchr(host_opt, '@');
	*userpwd = NULL;
	if(!at){
		*host = strdup(host_opt);
		return *host ? MOSQ_ERR_SUCCESS : MOSQ_ERR_NOMEM;
	}
	*host = strdup(at + 1);
	const char *colon = memchr(host_opt, ':', (size_t)(at - host_opt));
	size_t ulen = colon ? (size_t)(colon - host_opt) : (size_t)(at - host_opt);
	char *user = curl_easy_unescape(curl, host_opt, (int)ulen, NULL);
	char *pass = colon ? curl_easy_unescape(curl, colon + 1, (int)(at - colon - 1), NULL) : NULL;
	if(*host && user && (pass || !colon)){
		*userpwd = aprintf("%s:%s", user, pass ? pass : "");
	}
	curl_free(user);
	curl_free(pass);
	if(!*host || !*userpwd) return MOSQ_ERR_NOMEM;
	return MOSQ_ERR_SUCCESS;
}

static int config_load(struct plugin_state *st, struct mosquitto_opt *opts, int count)
{
	struct config *c = &st->cfg;
	const char *host = NULL, *port = NULL, *getuser = NULL, *acl = NULL, *superuser = NULL;
	const char *method = "POST";

	c->params = PARAMS_JSON;
	c->response = RESP_STATUS;
	c->timeout = 2;
	c->connect_timeout = 1;
	c->verify_peer = false;
	c->login_ttl = 0;
	c->acl_ttl = 0;
	c->stale_if_error = 300;
	c->breaker_min = 1;
	c->breaker_max = 30;
	c->limit_address = 20;
	c->limit_username = 10;
	c->limit_window = 60;
	c->limit_max_entries = 10000;
	long max_entries = 10000;

	for(int i = 0; i < count; i++){
		const char *k = opts[i].key, *v = opts[i].value;
		if(!k || !v) continue;
		if(!strcmp(k, "http_host")) host = v;
		else if(!strcmp(k, "http_port")) port = v;
		else if(!strcmp(k, "http_getuser_uri")) getuser = v;
		else if(!strcmp(k, "http_aclcheck_uri")) acl = v;
		else if(!strcmp(k, "http_superuser_uri")) superuser = *v ? v : NULL;
		else if(!strcmp(k, "http_method")) method = v;
		else if(!strcmp(k, "http_ca_file")) { free(c->ca_file); c->ca_file = xstrdup(v); }
		else if(!strcmp(k, "http_with_tls")) c->with_tls = parse_bool(v);
		else if(!strcmp(k, "http_verify_peer")) c->verify_peer = parse_bool(v);
		else if(!strcmp(k, "http_params_mode")){
			if(!strcasecmp(v, "json")) c->params = PARAMS_JSON;
			else if(!strcasecmp(v, "form")) c->params = PARAMS_FORM;
			else { mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "http_params_mode must be json or form"); return MOSQ_ERR_INVAL; }
		}else if(!strcmp(k, "http_response_mode")){
			if(!strcasecmp(v, "status")) c->response = RESP_STATUS;
			else if(!strcasecmp(v, "json")) c->response = RESP_JSON;
			else if(!strcasecmp(v, "text")) c->response = RESP_TEXT;
			else { mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "http_response_mode must be status, json or text"); return MOSQ_ERR_INVAL; }
		}else if(!strcmp(k, "http_timeout")){
			if(!parse_seconds(k, v, 0.001, &c->timeout)) return MOSQ_ERR_INVAL;
		}else if(!strcmp(k, "http_connect_timeout")){
			if(!parse_seconds(k, v, 0.001, &c->connect_timeout)) return MOSQ_ERR_INVAL;
		}else if(!strcmp(k, "cache_stale_if_error")){
			if(!parse_long(k, v, 0, &c->stale_if_error)) return MOSQ_ERR_INVAL;
		}else if(!strcmp(k, "breaker_min_interval")){
			if(!parse_seconds(k, v, 0, &c->breaker_min)) return MOSQ_ERR_INVAL;
		}else if(!strcmp(k, "breaker_max_interval")){
			if(!parse_seconds(k, v, 0, &c->breaker_max)) return MOSQ_ERR_INVAL;
		}else if(!strcmp(k, "limit_address_failures")){
			if(!parse_long(k, v, 0, &c->limit_address)) return MOSQ_ERR_INVAL;
		}else if(!strcmp(k, "limit_username_failures")){
			if(!parse_long(k, v, 0, &c->limit_username)) return MOSQ_ERR_INVAL;
		}else if(!strcmp(k, "limit_window")){
			if(!parse_long(k, v, 1, &c->limit_window)) return MOSQ_ERR_INVAL;
		}else if(!strcmp(k, "limit_max_entries")){
			if(!parse_long(k, v, 1, &c->limit_max_entries)) return MOSQ_ERR_INVAL;
		}else if(!strcmp(k, "cache_login_ttl")){
			if(!parse_long(k, v, 0, &c->login_ttl)) return MOSQ_ERR_INVAL;
		}else if(!strcmp(k, "cache_acl_ttl")){
			if(!parse_long(k, v, 0, &c->acl_ttl)) return MOSQ_ERR_INVAL;
		}else if(!strcmp(k, "cache_max_entries")){
			if(!parse_long(k, v, 1, &max_entries)) return MOSQ_ERR_INVAL;
		}
		/* Anything else (backends, log_level, go-auth cache options, ...) is
		 * ignored on purpose so one config block serves both plugins. */
	}

	if(!host || !port || !getuser || !acl){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "http_host, http_port, http_getuser_uri and http_aclcheck_uri are required");
		return MOSQ_ERR_INVAL;
	}
	if(strcasecmp(method, "POST") && strcasecmp(method, "GET") && strcasecmp(method, "PUT")){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "http_method must be POST, GET or PUT");
		return MOSQ_ERR_INVAL;
	}
	c->method = strdup(method);
	for(char *p = c->method; p && *p; p++) *p = (char)toupper((unsigned char)*p);

	char *bare_host = NULL;
	int rc = split_userinfo(st->curl, host, &bare_host, &c->userpwd);
	if(rc != MOSQ_ERR_SUCCESS){ free(bare_host); return rc; }
	c->scheme_host_port = aprintf("%s://%s:%s", c->with_tls ? "https" : "http", bare_host, port);
	free(bare_host);
	if(!c->scheme_host_port || !c->method) return MOSQ_ERR_NOMEM;
	c->getuser_url = aprintf("%s%s", c->scheme_host_port, getuser);
	c->acl_url = aprintf("%s%s", c->scheme_host_port, acl);
	if(superuser) c->superuser_url = aprintf("%s%s", c->scheme_host_port, superuser);
	if(!c->getuser_url || !c->acl_url || (superuser && !c->superuser_url)) return MOSQ_ERR_NOMEM;

	st->login_cache.max_entries = (size_t)max_entries;
	st->acl_cache.max_entries = (size_t)max_entries;
	/* A connect that may take longer than the whole request makes no sense. */
	if(c->connect_timeout > c->timeout) c->connect_timeout = c->timeout;
	limiter_init(&st->address_limiter, (unsigned long)c->limit_address, c->limit_window,
			(size_t)c->limit_max_entries);
	limiter_init(&st->username_limiter, (unsigned long)c->limit_username, c->limit_window,
			(size_t)c->limit_max_entries);
	return MOSQ_ERR_SUCCESS;
}

/* ------------------------------------------------------------------ cache */

/* Keys are length-prefixed fields so that ("ab","c") and ("a","bc") differ. */
struct keybuf {
	unsigned char *data;
	size_t len;
	bool off; /* not cached: the cache is off (TTL 0, no stale-if-error) or the key is too long */
};

static void key_add(struct keybuf *k, const void *field, size_t flen)
{
	if(k->off) return;
	if(k->len + flen + sizeof(uint32_t) > MAX_CACHE_KEY){ k->off = true; return; }
	uint32_t l = (uint32_t)flen;
	memcpy(k->data + k->len, &l, sizeof(l));
	k->len += sizeof(l);
	if(flen) memcpy(k->data + k->len, field, flen);
	k->len += flen;
}

static void key_add_str(struct keybuf *k, const char *s)
{
	/* NULL and "" must not collide. */
	if(!s){ key_add(k, "\xff", 1); key_add(k, NULL, 0); return; }
	key_add(k, s, strlen(s));
}

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
	uint64_t h = 1469598103934665603ULL;
	for(size_t i = 0; i < n; i++){ h ^= p[i]; h *= 1099511628211ULL; }
	return h;
}

static time_t now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void cache_clear(struct cache *c)
{
	for(size_t i = 0; i < CACHE_BUCKETS; i++){
		struct cache_entry *e = c->buckets[i];
		while(e){ struct cache_entry *n = e->next; free(e->key); free(e); e = n; }
		c->buckets[i] = NULL;
	}
	c->count = 0;
}

/* Drop the entries `gone` says so of. */
static void cache_drop_if(struct cache *c, bool (*gone)(const struct cache_entry *, int64_t), int64_t t)
{
	for(size_t i = 0; i < CACHE_BUCKETS; i++){
		struct cache_entry **pp = &c->buckets[i];
		while(*pp){
			struct cache_entry *e = *pp;
			if(gone(e, t)){ *pp = e->next; free(e->key); free(e); c->count--; }
			else pp = &e->next;
		}
	}
}

static bool past_stale(const struct cache_entry *e, int64_t now) { return e->stale_until <= now; }
static bool used_by(const struct cache_entry *e, int64_t cutoff) { return e->used <= cutoff; }

/* Make room in a full cache: entries past their stale age first, then the half used least
 * recently. Emptying it all would also throw away the decisions that stale-if-error keeps
 * for the fleet, whenever anyone (a client asking about many topics) fills the cache. */
static void cache_make_room(struct cache *c, int64_t now)
{
	cache_drop_if(c, past_stale, now);
	if(c->count < c->max_entries) return;
	int64_t oldest = now, newest = 0;
	for(size_t i = 0; i < CACHE_BUCKETS; i++){
		for(const struct cache_entry *e = c->buckets[i]; e; e = e->next){
			if(e->used < oldest) oldest = e->used;
			if(e->used > newest) newest = e->used;
		}
	}
	cache_drop_if(c, used_by, oldest + (newest - oldest) / 2);
	/* All used within the same millisecond: nothing tells them apart. */
	if(c->count >= c->max_entries) cache_clear(c);
}

/* The decision for `k`: fresh within its TTL, stale within stale-if-error (an entry past both
 * is dropped on the way). */
static struct cached cache_get(struct cache *c, const struct keybuf *k)
{
	struct cached out = {false, false, V_ERROR};
	if(k->off) return out;
	uint64_t h = fnv1a(k->data, k->len);
	int64_t now = now_ms();
	struct cache_entry **pp = &c->buckets[h % CACHE_BUCKETS];
	while(*pp){
		struct cache_entry *e = *pp;
		if(e->hash == h && e->key_len == k->len && !memcmp(e->key, k->data, k->len)){
			if(e->stale_until > now || e->expires > now){
				out.found = true;
				out.fresh = e->expires > now;
				out.verdict = e->verdict;
				if(out.fresh) e->used = now;
				return out;
			}
			*pp = e->next; free(e->key); free(e); c->count--;
			return out;
		}
		pp = &e->next;
	}
	return out;
}

/* Keep a decision for `ttl` seconds, and `stale` seconds more for when the backend fails.
 * With a TTL of 0 an entry is never fresh, only there for stale-if-error. */
static void cache_put(struct cache *c, const struct keybuf *k, enum verdict v, long ttl, long stale)
{
	if(ttl < 0) ttl = 0;
	if((ttl <= 0 && stale <= 0) || v == V_ERROR || k->off) return;
	int64_t now = now_ms();
	if(c->count >= c->max_entries) cache_make_room(c, now);
	struct cache_entry *e = calloc(1, sizeof(*e));
	if(!e) return;
	e->key = malloc(k->len ? k->len : 1);
	if(!e->key){ free(e); return; }
	memcpy(e->key, k->data, k->len);
	e->key_len = k->len;
	e->hash = fnv1a(k->data, k->len);
	/* Up to a fifth off the TTL, by key: decisions made together (a fleet's first messages
	 * after a restart) would otherwise expire together, and their refreshes, each an HTTP
	 * call that blocks the event loop, would come in one burst every TTL. */
	int64_t ttl_ms = (int64_t)ttl * 1000;
	e->expires = now + ttl_ms - (int64_t)(e->hash % (uint64_t)(ttl_ms / 5 + 1));
	e->stale_until = now + ttl_ms + (int64_t)stale * 1000;
	e->used = now;
	e->verdict = v;
	size_t b = e->hash % CACHE_BUCKETS;
	/* Replace an existing (expired) entry with the same key. */
	for(struct cache_entry **pp = &c->buckets[b]; *pp; pp = &(*pp)->next){
		struct cache_entry *o = *pp;
		if(o->hash == e->hash && o->key_len == e->key_len && !memcmp(o->key, e->key, e->key_len)){
			*pp = o->next; free(o->key); free(o); c->count--;
			break;
		}
	}
	e->next = c->buckets[b];
	c->buckets[b] = e;
	c->count++;
}

/* ------------------------------------------------------------------- http */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct body_buf *b = userdata;
	size_t n = size * nmemb;
	if(b->overflow || b->len + n > MAX_BODY){ b->overflow = true; return n; }
	char *d = realloc(b->data, b->len + n + 1);
	if(!d){ b->overflow = true; return n; }
	memcpy(d + b->len, ptr, n);
	b->len += n;
	d[b->len] = '\0';
	b->data = d;
	return n;
}

struct field {
	const char *name;
	const char *value;  /* NULL becomes "" */
	bool is_int;        /* JSON integer (acc) */
	int int_value;
};

static char *build_json(const struct field *f, size_t n)
{
	cJSON *o = cJSON_CreateObject();
	if(!o) return NULL;
	for(size_t i = 0; i < n; i++){
		cJSON *item = f[i].is_int ? cJSON_CreateNumber(f[i].int_value)
		                          : cJSON_CreateString(f[i].value ? f[i].value : "");
		if(!item){ cJSON_Delete(o); return NULL; }
		cJSON_AddItemToObject(o, f[i].name, item);
	}
	char *s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return s; /* freed with cJSON_free */
}

static char *build_form(CURL *curl, const struct field *f, size_t n)
{
	size_t cap = 1, len = 0;
	char *out = malloc(cap);
	if(!out) return NULL;
	out[0] = '\0';
	for(size_t i = 0; i < n; i++){
		char num[16];
		const char *raw = f[i].value ? f[i].value : "";
		if(f[i].is_int){ snprintf(num, sizeof(num), "%d", f[i].int_value); raw = num; }
		char *esc = curl_easy_escape(curl, raw, (int)strlen(raw));
		if(!esc){ free(out); return NULL; }
		size_t need = len + (i ? 1 : 0) + strlen(f[i].name) + 1 + strlen(esc) + 1;
		if(need > cap){
			char *o2 = realloc(out, need);
			if(!o2){ curl_free(esc); free(out); return NULL; }
			out = o2; cap = need;
		}
		len += (size_t)sprintf(out + len, "%s%s=%s", i ? "&" : "", f[i].name, esc);
		curl_free(esc);
	}
	return out;
}

/* Backend errors are logged at most once a second. With `log_dest topic`, every error line
 * is itself a message delivered to $SYS/broker/log subscribers, whose ACL check fails too
 * while the backend is away: without a limit the broker feeds on its own log and starves
 * every client. */
__attribute__((format(printf, 1, 2)))
static void log_backend_error(const char *fmt, ...)
{
	static time_t last;
	static unsigned long suppressed;
	char line[512];
	va_list ap;
	time_t now = time(NULL);

	if(now == last){
		suppressed++;
		return;
	}
	last = now;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if(suppressed){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "%s (and %lu more backend errors not logged)",
				line, suppressed);
	}else{
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "%s", line);
	}
	suppressed = 0;
}

/* The hint of a refused login's JSON body: false when the backend says its failures must not
 * count against the username (a secret nobody can guess online, a name nobody has). Any other
 * body (go-auth backends, text) leaves the limiter on. */
static bool limit_username_hint(const struct body_buf *b)
{
	if(!b->data || b->overflow) return true;
	cJSON *root = cJSON_ParseWithLength(b->data, b->len);
	const cJSON *hint = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "limit_username") : NULL;
	bool limit = !cJSON_IsFalse(hint);
	cJSON_Delete(root);
	return limit;
}

static enum verdict judge(const struct config *c, long status, const struct body_buf *b, const char *what,
		bool *limit_username)
{
	if(status >= 400 && status < 500){
		if(limit_username) *limit_username = limit_username_hint(b);
		return V_DENY;
	}
	if(status < 200 || status >= 300){
		log_backend_error("%s check: backend answered HTTP %ld", what, status);
		return V_ERROR;
	}
	if(b->overflow){
		log_backend_error("%s check: response body too large or out of memory", what);
		return V_ERROR;
	}
	switch(c->response){
	case RESP_STATUS:
		return V_ALLOW;
	case RESP_TEXT:
		return (b->len == 2 && b->data && !memcmp(b->data, "ok", 2)) ? V_ALLOW : V_DENY;
	case RESP_JSON: {
		cJSON *root = b->data ? cJSON_ParseWithLength(b->data, b->len) : NULL;
		const cJSON *ok = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "ok") : NULL;
		enum verdict v = V_ERROR;
		if(cJSON_IsBool(ok)) v = cJSON_IsTrue(ok) ? V_ALLOW : V_DENY;
		else log_backend_error("%s check: unreadable JSON response (HTTP %ld)", what, status);
		cJSON_Delete(root);
		return v;
	}
	}
	return V_ERROR;
}

static enum verdict http_check(struct plugin_state *st, const char *url, const char *what,
		const struct field *f, size_t n, bool *limit_username)
{
	const struct config *c = &st->cfg;
	CURL *curl = st->curl;
	struct body_buf body = {0};
	bool form = c->params == PARAMS_FORM;
	char *payload = form ? build_form(curl, f, n) : build_json(f, n);

	if(!payload){
		log_backend_error("%s check: out of memory", what);
		return V_ERROR;
	}
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDS, payload);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);

	CURLcode cc = curl_easy_perform(curl);
	long status = 0;
	enum verdict v;
	if(cc != CURLE_OK){
		log_backend_error("%s check: request to %s failed: %s",
				what, url, curl_easy_strerror(cc));
		v = V_ERROR;
	}else{
		curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
		v = judge(c, status, &body, what, limit_username);
	}

	curl_easy_setopt(curl, CURLOPT_POSTFIELDS, NULL);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, NULL);
	if(form) free(payload); else cJSON_free(payload);
	free(body.data);
	return v;
}

static int curl_setup(struct plugin_state *st, CURL *curl)
{
	const struct config *c = &st->cfg;
	bool form = c->params == PARAMS_FORM;
	if(st->headers) goto headers_built;
	const char *headers[] = {
		form ? "Content-Type: application/x-www-form-urlencoded" : "Content-Type: application/json",
		form ? "User-Agent: Go-http-client/1.1" : USER_AGENT,
		/* Without this curl sends "Expect: 100-continue" for large bodies and waits. */
		"Expect:",
	};
	for(size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++){
		struct curl_slist *l = curl_slist_append(st->headers, headers[i]);
		if(!l) return MOSQ_ERR_NOMEM;
		st->headers = l;
	}
headers_built:
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, st->headers);
	/* GET and PUT still carry the body, like go-auth; form mode is always POST. */
	if(!form && strcmp(c->method, "POST")) curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, c->method);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)(c->timeout * 1000));
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, (long)(c->connect_timeout * 1000));
	curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
	if(c->userpwd){
		curl_easy_setopt(curl, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(curl, CURLOPT_USERPWD, c->userpwd);
	}
	if(c->with_tls){
		curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, c->verify_peer ? 1L : 0L);
		curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, c->verify_peer ? 2L : 0L);
		if(c->ca_file) curl_easy_setopt(curl, CURLOPT_CAINFO, c->ca_file);
	}
	return MOSQ_ERR_SUCCESS;
}

/* -------------------------------------------------------------- callbacks */

/* Breaker state changes are logged here, in the broker's thread (breaker.c calls no broker API). */
static void log_breaker(struct plugin_state *st)
{
	enum breaker_state state;
	double interval;
	unsigned long probes_failed;
	if(!breaker_changed(&st->breaker, &state, &interval, &probes_failed)) return;
	if(state == BREAKER_OPEN){
		mosquitto_log_printf(MOSQ_LOG_WARNING, LOG_PREFIX "backend failing: not asking it for %.1fs "
				"(answering from stale-if-error, or with an error)", interval);
	}else{
		mosquitto_log_printf(MOSQ_LOG_NOTICE, LOG_PREFIX "backend answering again after %lu failed probes; "
				"%lu decisions were reused from stale-if-error meanwhile", probes_failed, st->stale_served);
		st->stale_served = 0;
	}
}

/* The backend failed or is not asked (breaker open): a decision it made before, or the error. */
static enum verdict fallback(struct plugin_state *st, const struct cached *known)
{
	if(!known->found) return V_ERROR;
	st->stale_served++;
	return known->verdict;
}

/* Ask the backend about a key the cache had no fresh decision for (`known`: a stale one or
 * nothing). The answer is cached unless it is an error; an error opens the breaker.
 * *answered (if given) says whether the verdict is the backend's own, not a fallback. */
static enum verdict ask(struct plugin_state *st, struct cache *cache, long ttl,
		const struct keybuf *key, const struct cached *known, const char *url, const char *what,
		const struct field *f, size_t n, bool *limit_username, bool *answered)
{
	if(answered) *answered = false;
	if(!breaker_allows(&st->breaker)){
		log_breaker(st);
		return fallback(st, known);
	}
	log_breaker(st);
	enum verdict v = http_check(st, url, what, f, n, limit_username);
	if(v == V_ERROR){
		breaker_failed(&st->breaker);
		log_breaker(st);
		return fallback(st, known);
	}
	cache_put(cache, key, v, ttl, st->cfg.stale_if_error);
	if(answered) *answered = true;
	return v;
}

/* The cached decision for `key`, or the backend's. */
static enum verdict decide(struct plugin_state *st, struct cache *cache, long ttl,
		const struct keybuf *key, const char *url, const char *what,
		const struct field *f, size_t n)
{
	struct cached known = cache_get(cache, key);
	if(known.found && known.fresh) return known.verdict;
	return ask(st, cache, ttl, key, &known, url, what, f, n, NULL, NULL);
}

/* Whether a login that the cache cannot answer may be asked of the backend: not from an
 * address, or for a username, that failed too often in the current window. */
static bool login_limited(struct plugin_state *st, const char *address, const char *username, time_t now)
{
	if(limiter_tripped(&st->address_limiter, address, now)) return true;
	return limiter_tripped(&st->username_limiter, username, now);
}

/* Count the backend's answer to a login in the limiters. */
static void login_counted(struct plugin_state *st, enum verdict v, const char *address,
		const char *username, bool limit_username, time_t now)
{
	if(v == V_ALLOW){
		limiter_forget(&st->username_limiter, username);
		return;
	}
	if(v != V_DENY) return;
	if(limiter_fail(&st->address_limiter, address, now)){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, LOG_PREFIX "refusing logins from %s for up to %lds: "
				"%ld refused logins", address, st->cfg.limit_window, st->cfg.limit_address);
	}
	if(limit_username && limiter_fail(&st->username_limiter, username, now)){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, LOG_PREFIX "refusing new secrets for user '%.*s' for up "
				"to %lds: %ld refused logins", LOG_MAX, username, st->cfg.limit_window,
				st->cfg.limit_username);
	}
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct plugin_state *st = userdata;
	struct mosquitto_evt_basic_auth *ed = event_data;
	const char *clientid = mosquitto_client_id(ed->client);
	(void)event;

	if(!ed->username || !ed->password){
		mosquitto_log_printf(MOSQ_LOG_DEBUG, LOG_PREFIX "refusing client '%.*s' without username or password",
				LOG_MAX, clientid ? clientid : "");
		return MOSQ_ERR_AUTH;
	}

	unsigned char kdata[MAX_CACHE_KEY];
	struct keybuf key = {kdata, 0, st->cfg.login_ttl <= 0 && st->cfg.stale_if_error <= 0};
	if(!key.off){
		/* Keep a digest of the password in the cache, never the plaintext. */
		unsigned char digest[SHA256_DIGEST_LENGTH];
		SHA256((const unsigned char *)ed->password, strlen(ed->password), digest);
		key_add_str(&key, ed->username);
		key_add(&key, digest, sizeof(digest));
		key_add_str(&key, clientid);
	}
	const char *address = mosquitto_client_address(ed->client);
	const struct field f[] = {
		{"username", ed->username, false, 0},
		{"password", ed->password, false, 0},
		{"clientid", clientid, false, 0},
		/* Not in go-auth's contract: Django counts a guessable secret's failures per source. */
		{"address", address, false, 0},
	};
	struct cached known = cache_get(&st->login_cache, &key);
	enum verdict v = known.verdict;
	if(!known.found || !known.fresh){
		time_t now = now_s();
		/* A secret the backend accepted before (a stale allow) is the device itself: no
		 * one else's failures keep it from asking. */
		bool known_good = known.found && known.verdict == V_ALLOW;
		if(!known_good && login_limited(st, address, ed->username, now)){
			mosquitto_log_printf(MOSQ_LOG_DEBUG, LOG_PREFIX "login refused by the limiter: user '%.*s' from %s",
					LOG_MAX, ed->username, address ? address : "?");
			return MOSQ_ERR_AUTH;
		}
		bool limit_username = true, answered = false;
		v = ask(st, &st->login_cache, st->cfg.login_ttl, &key, &known, st->cfg.getuser_url,
				"user", f, 4, &limit_username, &answered);
		/* A stale denial reused during an outage is not a new failure. */
		if(answered) login_counted(st, v, address, ed->username, limit_username, now);
	}
	switch(v){
	case V_ALLOW:
		return MOSQ_ERR_SUCCESS;
	case V_DENY:
		mosquitto_log_printf(MOSQ_LOG_DEBUG, LOG_PREFIX "login denied for user '%.*s' client '%.*s'",
				LOG_MAX, ed->username, LOG_MAX, clientid ? clientid : "");
		return MOSQ_ERR_AUTH;
	default:
		return MOSQ_ERR_UNKNOWN;
	}
}

static enum verdict superuser_check(struct plugin_state *st, const char *username)
{
	unsigned char kdata[MAX_CACHE_KEY];
	struct keybuf key = {kdata, 0, st->cfg.acl_ttl <= 0 && st->cfg.stale_if_error <= 0};
	key_add(&key, "S", 1);
	key_add_str(&key, username);
	const struct field f[] = {{"username", username, false, 0}};
	return decide(st, &st->acl_cache, st->cfg.acl_ttl, &key, st->cfg.superuser_url, "superuser", f, 1);
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct plugin_state *st = userdata;
	struct mosquitto_evt_acl_check *ed = event_data;
	(void)event;

	if(ed->access == MOSQ_ACL_UNSUBSCRIBE) return MOSQ_ERR_SUCCESS;
	if(ed->access != MOSQ_ACL_READ && ed->access != MOSQ_ACL_WRITE && ed->access != MOSQ_ACL_SUBSCRIBE){
		return MOSQ_ERR_ACL_DENIED;
	}

	const char *username = mosquitto_client_username(ed->client);
	const char *clientid = mosquitto_client_id(ed->client);
	const char *topic = ed->topic ? ed->topic : "";
	if(!username) return MOSQ_ERR_ACL_DENIED;

	if(st->cfg.superuser_url){
		enum verdict sv = superuser_check(st, username);
		if(sv == V_ALLOW) return MOSQ_ERR_SUCCESS;
		if(sv == V_ERROR) return MOSQ_ERR_UNKNOWN;
	}

	unsigned char kdata[MAX_CACHE_KEY];
	struct keybuf key = {kdata, 0, st->cfg.acl_ttl <= 0 && st->cfg.stale_if_error <= 0};
	key_add(&key, "A", 1);
	key_add_str(&key, username);
	key_add_str(&key, clientid);
	key_add_str(&key, topic);
	uint8_t acc = (uint8_t)ed->access;
	key_add(&key, &acc, 1);
	const struct field f[] = {
		{"username", username, false, 0},
		{"clientid", clientid, false, 0},
		{"topic", topic, false, 0},
		{"acc", NULL, true, ed->access},
	};
	switch(decide(st, &st->acl_cache, st->cfg.acl_ttl, &key, st->cfg.acl_url, "acl", f, 4)){
	case V_ALLOW:
		return MOSQ_ERR_SUCCESS;
	case V_DENY:
		mosquitto_log_printf(MOSQ_LOG_DEBUG, LOG_PREFIX "acl denied: user '%.*s' client '%.*s' topic '%.*s' acc %d",
				LOG_MAX, username, LOG_MAX, clientid ? clientid : "", LOG_MAX, topic, ed->access);
		return MOSQ_ERR_ACL_DENIED;
	default:
		return MOSQ_ERR_UNKNOWN;
	}
}

/* ------------------------------------------------------------ change feed */

/* feed.c calls this on the broker's thread when a policy change arrived. */
static void clear_caches(void *ctx)
{
	struct plugin_state *st = ctx;
	cache_clear(&st->login_cache);
	cache_clear(&st->acl_cache);
}

static int on_tick(int event, void *event_data, void *userdata)
{
	struct plugin_state *st = userdata;
	(void)event;
	(void)event_data;
	feed_tick(st->feed);
	return MOSQ_ERR_SUCCESS;
}

static int start_feed(struct plugin_state *st, struct mosquitto_opt *options, int option_count)
{
	const struct config *c = &st->cfg;
	const struct feed_http http = {
		c->scheme_host_port, c->userpwd, c->ca_file, c->with_tls, c->verify_peer, c->timeout,
	};
	int rc = feed_start(&st->feed, &http, options, option_count, clear_caches, st);
	if(rc == MOSQ_ERR_SUCCESS && st->feed){
		rc = mosquitto_callback_register(st->id, MOSQ_EVT_TICK, on_tick, NULL, st);
	}
	return rc;
}

static void stop_feed(struct plugin_state *st)
{
	if(!st->feed) return;
	mosquitto_callback_unregister(st->id, MOSQ_EVT_TICK, on_tick, NULL);
	feed_stop(st->feed);
	st->feed = NULL;
}

/* ------------------------------------------------------------ plugin API */

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	(void)supported_version_count;
	(void)supported_versions;
	return 5;
}

static void state_free(struct plugin_state *st)
{
	if(!st) return;
	if(st->breaker_started) breaker_stop(&st->breaker);
	cache_clear(&st->login_cache);
	cache_clear(&st->acl_cache);
	limiter_clear(&st->address_limiter);
	limiter_clear(&st->username_limiter);
	config_free(&st->cfg);
	if(st->curl) curl_easy_cleanup(st->curl);
	curl_slist_free_all(st->headers);
	free(st);
}

/* The breaker's probe: an ACL question for no one, on a handle of its own. Any 2xx or 4xx
 * means the backend answers (Django audits it as a denied check for an empty username). */
static int breaker_setup(struct plugin_state *st)
{
	const struct field f[] = {
		{"username", "", false, 0}, {"clientid", "", false, 0},
		{"topic", "", false, 0}, {"acc", NULL, true, MOSQ_ACL_READ},
	};
	CURL *curl = curl_easy_init();
	if(!curl) return MOSQ_ERR_NOMEM;
	char *body = NULL;
	if(st->cfg.params == PARAMS_FORM) body = build_form(curl, f, 4);
	else {
		char *json = build_json(f, 4);
		body = xstrdup(json);
		cJSON_free(json);
	}
	char *url = xstrdup(st->cfg.acl_url);
	int rc = (body && url) ? curl_setup(st, curl) : MOSQ_ERR_NOMEM;
	if(rc == MOSQ_ERR_SUCCESS && breaker_start(&st->breaker, st->cfg.breaker_min, st->cfg.breaker_max, curl, url, body)){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "cannot start the breaker's probe thread");
		rc = MOSQ_ERR_UNKNOWN;
	}
	if(rc != MOSQ_ERR_SUCCESS){
		curl_easy_cleanup(curl);
		free(body);
		free(url);
		return rc;
	}
	st->breaker_started = true;
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	if(g_state){
		mosquitto_log_printf(MOSQ_LOG_ERR, LOG_PREFIX "loaded twice; only one instance is supported");
		return MOSQ_ERR_INVAL;
	}
	if(curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return MOSQ_ERR_UNKNOWN;
	struct plugin_state *st = calloc(1, sizeof(*st));
	if(!st){ curl_global_cleanup(); return MOSQ_ERR_NOMEM; }
	st->id = identifier;
	st->curl = curl_easy_init();
	int rc = st->curl ? config_load(st, options, option_count) : MOSQ_ERR_NOMEM;
	if(rc == MOSQ_ERR_SUCCESS) rc = curl_setup(st, st->curl);
	if(rc == MOSQ_ERR_SUCCESS) rc = breaker_setup(st);
	if(rc == MOSQ_ERR_SUCCESS) rc = mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, st);
	if(rc == MOSQ_ERR_SUCCESS){
		rc = mosquitto_callback_register(identifier, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, st);
		if(rc != MOSQ_ERR_SUCCESS) mosquitto_callback_unregister(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	}
	if(rc == MOSQ_ERR_SUCCESS){
		rc = start_feed(st, options, option_count);
		if(rc != MOSQ_ERR_SUCCESS){
			stop_feed(st);
			mosquitto_callback_unregister(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
			mosquitto_callback_unregister(identifier, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
		}
	}
	if(rc != MOSQ_ERR_SUCCESS){
		state_free(st);
		curl_global_cleanup();
		return rc;
	}
	mosquitto_log_printf(MOSQ_LOG_INFO, LOG_PREFIX "user %s, acl %s%s%s, params %s, response %s, "
			"timeout %.3gs (connect %.3gs), cache login %lds acl %lds stale-if-error %lds, "
			"breaker %.3g-%.3gs, limits %ld/address %ld/username per %lds",
			st->cfg.getuser_url, st->cfg.acl_url,
			st->cfg.superuser_url ? ", superuser " : "", st->cfg.superuser_url ? st->cfg.superuser_url : "",
			st->cfg.params == PARAMS_FORM ? "form" : "json",
			st->cfg.response == RESP_JSON ? "json" : st->cfg.response == RESP_TEXT ? "text" : "status",
			st->cfg.timeout, st->cfg.connect_timeout, st->cfg.login_ttl, st->cfg.acl_ttl,
			st->cfg.stale_if_error, st->cfg.breaker_min, st->cfg.breaker_max,
			st->cfg.limit_address, st->cfg.limit_username, st->cfg.limit_window);
	g_state = st;
	*userdata = st;
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	struct plugin_state *st = userdata;
	(void)options;
	(void)option_count;
	if(!st) return MOSQ_ERR_SUCCESS;
	mosquitto_callback_unregister(st->id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	mosquitto_callback_unregister(st->id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
	stop_feed(st);
	state_free(st);
	g_state = NULL;
	curl_global_cleanup();
	return MOSQ_ERR_SUCCESS;
}
