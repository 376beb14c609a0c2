/* The failed-login limiter (limiter.h). Runs in the broker's event loop only: no locking. */
#include "limiter.h"

#include <stdlib.h>
#include <string.h>

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for(; *s; s++){ h ^= (unsigned char)*s; h *= 1099511628211ULL; }
	return h;
}

void limiter_init(struct limiter *l, unsigned long max_failures, long window, size_t max_entries)
{
	memset(l, 0, sizeof(*l));
	l->max_failures = max_failures;
	l->window = window;
	l->max_entries = max_entries;
}

static void entry_free(struct limiter_entry *e)
{
	free(e->key);
	free(e);
}

void limiter_clear(struct limiter *l)
{
	for(size_t i = 0; i < LIMITER_BUCKETS; i++){
		struct limiter_entry *e = l->buckets[i];
		while(e){ struct limiter_entry *n = e->next; entry_free(e); e = n; }
		l->buckets[i] = NULL;
	}
	l->count = 0;
}

static void purge_ended(struct limiter *l, time_t now)
{
	for(size_t i = 0; i < LIMITER_BUCKETS; i++){
		struct limiter_entry **pp = &l->buckets[i];
		while(*pp){
			struct limiter_entry *e = *pp;
			if(e->window_end <= now){ *pp = e->next; entry_free(e); l->count--; }
			else pp = &e->next;
		}
	}
}

/* The entry for `key` whose window has not ended (an ended one is dropped on the way). */
static struct limiter_entry **find(struct limiter *l, const char *key, uint64_t h, time_t now)
{
	struct limiter_entry **pp = &l->buckets[h % LIMITER_BUCKETS];
	while(*pp){
		struct limiter_entry *e = *pp;
		if(e->hash == h && !strcmp(e->key, key)){
			if(e->window_end > now) return pp;
			*pp = e->next; entry_free(e); l->count--;
			return NULL;
		}
		pp = &e->next;
	}
	return NULL;
}

bool limiter_tripped(struct limiter *l, const char *key, time_t now)
{
	if(!l->max_failures || !key) return false;
	struct limiter_entry **pp = find(l, key, hash_str(key), now);
	if(!pp || (*pp)->failures < l->max_failures) return false;
	l->refused++;
	return true;
}

bool limiter_fail(struct limiter *l, const char *key, time_t now)
{
	if(!l->max_failures || !key) return false;
	uint64_t h = hash_str(key);
	struct limiter_entry **pp = find(l, key, h, now);
	if(pp) return ++(*pp)->failures == l->max_failures;
	if(l->count >= l->max_entries){
		purge_ended(l, now);
		/* Still full: a flood from more sources than the table holds. Starting over keeps the
		 * memory bound; the sources flooding now trip again within their next max_failures. */
		if(l->count >= l->max_entries) limiter_clear(l);
	}
	struct limiter_entry *e = calloc(1, sizeof(*e));
	if(!e) return false;
	e->key = strdup(key);
	if(!e->key){ free(e); return false; }
	e->hash = h;
	e->window_end = now + l->window;
	e->failures = 1;
	e->next = l->buckets[h % LIMITER_BUCKETS];
	l->buckets[h % LIMITER_BUCKETS] = e;
	l->count++;
	return e->failures == l->max_failures;
}

void limiter_forget(struct limiter *l, const char *key)
{
	if(!l->max_failures || !key) return;
	uint64_t h = hash_str(key);
	struct limiter_entry **pp = &l->buckets[h % LIMITER_BUCKETS];
	for(; *pp; pp = &(*pp)->next){
		struct limiter_entry *e = *pp;
		if(e->hash == h && !strcmp(e->key, key)){ *pp = e->next; entry_free(e); l->count--; return; }
	}
}
