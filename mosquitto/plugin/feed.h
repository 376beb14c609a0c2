/*
 * feed: follow Django's change feed (GET /mqtt/auth/changes) so that revocations reach the
 * broker at once instead of after the cache TTL. See README.md, "Change feed".
 *
 * A background thread with its own CURL handle long-polls the feed and queues what it
 * learns; feed_tick(), called from the broker's thread on MOSQ_EVT_TICK, drains the queue:
 * it clears the caches (through the callback given to feed_start) and kicks sessions. The
 * broker API is only ever called from feed_tick() and feed_start()/feed_stop().
 */
#ifndef AUTH_HTTP_FEED_H
#define AUTH_HTTP_FEED_H

#include <stdbool.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

struct feed;

/* What the feed shares with the auth checks' HTTP settings. */
struct feed_http {
	const char *scheme_host_port; /* "https://host:port" */
	const char *userpwd;          /* "user:secret" for HTTP Basic, or NULL */
	const char *ca_file;
	bool with_tls;
	bool verify_peer;
	long connect_timeout;         /* seconds */
};

/* Called on the broker's thread when every cached decision must go. */
typedef void (*feed_clear_fn)(void *ctx);

/* Reads http_changes_uri (unset or empty: no feed, *out = NULL), http_changes_wait and
 * http_changes_name from `opts` and starts the thread. MOSQ_ERR_INVAL on a bad value. */
int feed_start(struct feed **out, const struct feed_http *http,
		struct mosquitto_opt *opts, int count, feed_clear_fn clear, void *ctx);

/* On the broker's thread (MOSQ_EVT_TICK): apply what the thread queued. NULL is a no-op. */
void feed_tick(struct feed *f);

/* Stop and join the thread (at most about a second), free everything. NULL is a no-op. */
void feed_stop(struct feed *f);

#endif
