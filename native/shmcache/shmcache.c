/*
 * agentwall.cache._shmcache: the decision table and the rate-limit buckets in
 * shared memory, lock-free across processes.
 *
 * The memory is a region the Python side maps (memfd + mmap, MAP_SHARED) and
 * formats (agentwall/cache/layout.py documents every offset); this module only
 * reads and writes it.  Nothing here blocks: a slot held by a writer that never
 * finishes (a process killed mid-write) makes readers give up after a bounded
 * number of retries and report a miss, and writers skip it.
 *
 * Decision table: fixed slots, open addressing in a non-wrapping probe window
 * [home, home + window).  Each slot is guarded by a seqlock: a writer claims the
 * slot by CAS-ing its sequence from even to odd, writes, then publishes the next
 * even value; a reader copies the slot and accepts the copy only if the sequence
 * was even and unchanged around it.  Data words are read and written with
 * relaxed atomics and ordered by fences (Boehm, "Can seqlocks get along with
 * programming language memory models?", 2012), so there is no data race in the
 * C11 sense.  A checksum over key, length and value is verified on every hit as
 * a second line of defence; a mismatch is counted ("torn") and read as a miss.
 *
 * Buckets: a 64-bit word per bucket packs fixed-point tokens and the refill
 * clock, updated by compare-and-swap; the arithmetic is refill_take() below,
 * the twin of agentwall/cache/tokens.py.  A bucket is bound to its key by a
 * state word (generation << 2 | kind); re-keying an idle bucket bumps the
 * generation, and a take re-reads the state after its CAS, so a take can never
 * be credited to a bucket that changed hands under it (it retries: at worst a
 * caller is charged twice, never given a free token).
 *
 * GCC/Clang __atomic builtins on naturally aligned 64-bit words are lock-free
 * and address-free on every 64-bit target we build for, which is what makes
 * them valid between processes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if !defined(__GNUC__) && !defined(__clang__)
#error "needs GCC or Clang __atomic builtins"
#endif
#if __SIZEOF_POINTER__ != 8
#error "64-bit targets only"
#endif
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the region layout is little-endian"
#endif

#define VERSION 1
#define IMPL_NATIVE 1
#define HEADER_SIZE 64
#define SLOT_META 48
#define MAX_SLOT_SIZE 4096
#define BUCKET_SIZE 64
#define TICK_SHIFT 20
#define RATE_SHIFT 32
#define M32 0xFFFFFFFFULL
#define SKEW ((1ULL << 32) - (1ULL << 12))
#define HALF (1ULL << 31)
#define READ_RETRIES 200
#define CAS_RETRIES 2000
#define FULL_RETRY_NS 1000000000LL

#define KIND_EMPTY 0
#define KIND_CLAIMING 1
#define KIND_READY 2

typedef struct {
    char magic[8];
    uint32_t version;
    uint32_t impl;
    uint64_t count;  /* n_slots or n_buckets */
    uint32_t size;   /* slot_size (table) or window (buckets) */
    uint32_t window; /* window (table); unused for buckets */
    uint64_t torn_or_full;
    uint64_t busy;
} header_t;

typedef struct {
    uint64_t seq;
    uint64_t touched;
    uint64_t key[2];
    uint64_t lenflags; /* length (low 32) | flags (high 32) */
    uint64_t check;
    uint64_t value[];
} slot_t;

typedef struct {
    uint64_t state;
    uint64_t key;
    uint64_t word;
    uint64_t pad[5];
} bucket_t;

_Static_assert(sizeof(header_t) == 48, "header layout");
_Static_assert(offsetof(slot_t, value) == SLOT_META, "slot layout");
_Static_assert(sizeof(bucket_t) == BUCKET_SIZE, "bucket layout");

static inline uint64_t ld(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void st(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline void bump(uint64_t *p) { __atomic_fetch_add(p, 1, __ATOMIC_RELAXED); }

static inline void backoff(int attempt) {
    if (attempt < 16) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        __asm__ __volatile__("yield");
#endif
    } else {
        sched_yield();
    }
}

static inline uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v;
    h *= 0x9E3779B97F4A7C15ULL;
    return h ^ (h >> 29);
}

static uint64_t checksum(uint64_t k0, uint64_t k1, uint32_t len, const uint64_t *words) {
    uint64_t h = mix(mix(mix(0x243F6A8885A308D3ULL, k0), k1), len);
    size_t n = (len + 7) / 8;
    for (size_t i = 0; i < n; i++) h = mix(h, words[i]);
    return h;
}

/* ------------------------------------------------------------------ table */

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    int has_view;
    header_t *hdr;
    char *slots;
    uint64_t n_slots;
    uint32_t slot_size;
    uint32_t window;
    uint32_t value_capacity;
} TableObject;

static int attach(Py_buffer *view, PyObject *buffer, const char *magic, header_t **hdr) {
    if (PyObject_GetBuffer(buffer, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (view->len < HEADER_SIZE || ((uintptr_t)view->buf & 63) != 0) {
        PyErr_SetString(PyExc_ValueError, "region too small or not 64-byte aligned");
        PyBuffer_Release(view);
        return -1;
    }
    *hdr = (header_t *)view->buf;
    if (memcmp((*hdr)->magic, magic, 8) != 0 || (*hdr)->version != VERSION) {
        PyErr_Format(PyExc_ValueError, "region is not a formatted %.8s region", magic);
        PyBuffer_Release(view);
        return -1;
    }
    if ((*hdr)->impl != IMPL_NATIVE) {
        PyErr_Format(PyExc_ValueError, "region was formatted for backend %u, not the native one",
                     (unsigned)(*hdr)->impl);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int Table_init(TableObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"buffer", "fd", NULL};
    PyObject *buffer;
    int fd = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|i", kwlist, &buffer, &fd)) return -1;
    if (self->has_view) {
        PyErr_SetString(PyExc_RuntimeError, "already initialised");
        return -1;
    }
    header_t *hdr;
    if (attach(&self->view, buffer, "AWDCACHE", &hdr) < 0) return -1;
    uint64_t n = hdr->count;
    uint32_t size = hdr->size, window = hdr->window;
    if (size < 128 || size % 64 || size > MAX_SLOT_SIZE || window < 1 || window > 64 || n < window ||
        n > ((uint64_t)self->view.len - HEADER_SIZE) / size) {
        PyErr_SetString(PyExc_ValueError, "bad table geometry");
        PyBuffer_Release(&self->view);
        return -1;
    }
    self->has_view = 1;
    self->hdr = hdr;
    self->slots = (char *)self->view.buf + HEADER_SIZE;
    self->n_slots = n;
    self->slot_size = size;
    self->window = window;
    self->value_capacity = size - SLOT_META;
    return 0;
}

static void Table_dealloc(TableObject *self) {
    if (self->has_view) PyBuffer_Release(&self->view);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static inline slot_t *slot_at(TableObject *t, uint64_t i) {
    return (slot_t *)(t->slots + i * t->slot_size);
}

enum { R_EMPTY, R_OTHER, R_MATCH, R_BUSY };

/* A consistent look at one slot.  With `out`, a matching slot's value is copied
 * there and its length stored in *out_len. */
static int read_slot(TableObject *t, slot_t *s, uint64_t k0, uint64_t k1, uint64_t *out,
                     uint32_t *out_len) {
    for (int attempt = 0; attempt < READ_RETRIES; attempt++) {
        uint64_t s1 = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
        if (s1 == 0) return R_EMPTY;
        if (s1 & 1) {
            backoff(attempt);
            continue;
        }
        uint64_t a = ld(&s->key[0]), b = ld(&s->key[1]), lf = ld(&s->lenflags);
        uint32_t len = (uint32_t)lf, flags = (uint32_t)(lf >> 32);
        int match = flags && a == k0 && b == k1;
        uint64_t check = 0;
        if (match && out) {
            if (len > t->value_capacity) len = t->value_capacity; /* torn; rejected below */
            size_t n = (len + 7) / 8;
            for (size_t i = 0; i < n; i++) out[i] = ld(&s->value[i]);
            check = ld(&s->check);
        }
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&s->seq, __ATOMIC_RELAXED) != s1) continue;
        if (!flags) return R_EMPTY;
        if (!match) return R_OTHER;
        if (out) {
            if ((uint32_t)lf != len || checksum(a, b, len, out) != check) {
                bump(&t->hdr->torn_or_full);
                return R_OTHER;
            }
            *out_len = len;
        }
        return R_MATCH;
    }
    bump(&t->hdr->busy);
    return R_BUSY;
}

static int lock_slot(TableObject *t, slot_t *s, uint64_t *seq) {
    for (int attempt = 0; attempt < CAS_RETRIES; attempt++) {
        uint64_t cur = __atomic_load_n(&s->seq, __ATOMIC_RELAXED);
        if (cur & 1) {
            backoff(attempt);
            continue;
        }
        if (__atomic_compare_exchange_n(&s->seq, &cur, cur + 1, 0, __ATOMIC_ACQUIRE,
                                        __ATOMIC_RELAXED)) {
            __atomic_thread_fence(__ATOMIC_RELEASE);
            *seq = cur + 1;
            return 1;
        }
    }
    bump(&t->hdr->busy);
    return 0;
}

static inline void unlock_slot(slot_t *s, uint64_t seq) {
    __atomic_store_n(&s->seq, seq + 1, __ATOMIC_RELEASE);
}

static int parse_key(Py_buffer *key, uint64_t *k0, uint64_t *k1) {
    if (key->len != 16) {
        PyErr_SetString(PyExc_ValueError, "key must be 16 bytes");
        return -1;
    }
    memcpy(k0, key->buf, 8);
    memcpy(k1, (char *)key->buf + 8, 8);
    return 0;
}

static inline uint64_t home_of(uint64_t k0, uint64_t n, uint32_t window) {
    return k0 % (n - window + 1);
}

static PyObject *Table_lookup(TableObject *self, PyObject *args) {
    Py_buffer key;
    unsigned long long now;
    if (!PyArg_ParseTuple(args, "y*K", &key, &now)) return NULL;
    uint64_t k0, k1;
    int bad = parse_key(&key, &k0, &k1);
    PyBuffer_Release(&key);
    if (bad) return NULL;
    uint64_t out[MAX_SLOT_SIZE / 8];
    uint32_t len = 0;
    uint64_t home = home_of(k0, self->n_slots, self->window);
    for (uint32_t i = 0; i < self->window; i++) {
        slot_t *s = slot_at(self, home + i);
        int r = read_slot(self, s, k0, k1, out, &len);
        if (r == R_EMPTY) break;
        if (r == R_MATCH) {
            st(&s->touched, (uint64_t)now);
            return PyBytes_FromStringAndSize((const char *)out, len);
        }
    }
    Py_RETURN_NONE;
}

static PyObject *Table_insert(TableObject *self, PyObject *args) {
    Py_buffer key, value;
    unsigned long long now;
    if (!PyArg_ParseTuple(args, "y*y*K", &key, &value, &now)) return NULL;
    uint64_t k0, k1;
    if (parse_key(&key, &k0, &k1) < 0) {
        PyBuffer_Release(&key);
        PyBuffer_Release(&value);
        return NULL;
    }
    PyBuffer_Release(&key);
    if ((uint64_t)value.len > self->value_capacity) {
        PyBuffer_Release(&value);
        return PyLong_FromLong(0);
    }
    uint32_t len = (uint32_t)value.len;
    uint64_t words[MAX_SLOT_SIZE / 8];
    size_t n = (len + 7) / 8;
    if (n) words[n - 1] = 0;
    memcpy(words, value.buf, len);
    PyBuffer_Release(&value);

    uint64_t home = home_of(k0, self->n_slots, self->window);
    int64_t target = -1, oldest = -1;
    uint64_t oldest_touched = UINT64_MAX;
    for (uint32_t i = 0; i < self->window; i++) {
        slot_t *s = slot_at(self, home + i);
        int r = read_slot(self, s, k0, k1, NULL, NULL);
        if (r == R_EMPTY || r == R_MATCH) {
            target = (int64_t)(home + i);
            break;
        }
        if (r == R_BUSY) continue;
        uint64_t touched = ld(&s->touched);
        if (touched < oldest_touched) {
            oldest_touched = touched;
            oldest = (int64_t)(home + i);
        }
    }
    int evicting = 0;
    if (target < 0) {
        if (oldest < 0) return PyLong_FromLong(0);
        target = oldest;
        evicting = 1;
    }
    slot_t *s = slot_at(self, (uint64_t)target);
    uint64_t seq;
    if (!lock_slot(self, s, &seq)) return PyLong_FromLong(0);
    st(&s->key[0], k0);
    st(&s->key[1], k1);
    st(&s->lenflags, (uint64_t)len | (1ULL << 32));
    for (size_t i = 0; i < n; i++) st(&s->value[i], words[i]);
    st(&s->check, checksum(k0, k1, len, words));
    st(&s->touched, (uint64_t)now);
    unlock_slot(s, seq);
    return PyLong_FromLong(evicting ? 2 : 1);
}

static PyObject *Table_clear(TableObject *self, PyObject *Py_UNUSED(ignored)) {
    for (uint64_t i = 0; i < self->n_slots; i++) {
        slot_t *s = slot_at(self, i);
        if (__atomic_load_n(&s->seq, __ATOMIC_ACQUIRE) == 0) continue;
        uint64_t seq;
        if (!lock_slot(self, s, &seq)) continue;
        st(&s->lenflags, 0);
        unlock_slot(s, seq);
    }
    Py_RETURN_NONE;
}

static PyObject *Table_stats(TableObject *self, PyObject *Py_UNUSED(ignored)) {
    return Py_BuildValue("{sKsK}", "torn",
                         (unsigned long long)__atomic_load_n(&self->hdr->torn_or_full,
                                                             __ATOMIC_RELAXED),
                         "busy",
                         (unsigned long long)__atomic_load_n(&self->hdr->busy, __ATOMIC_RELAXED));
}

static PyObject *Table_get_n_slots(TableObject *self, void *c) {
    return PyLong_FromUnsignedLongLong(self->n_slots);
}
static PyObject *Table_get_slot_size(TableObject *self, void *c) {
    return PyLong_FromUnsignedLong(self->slot_size);
}
static PyObject *Table_get_window(TableObject *self, void *c) {
    return PyLong_FromUnsignedLong(self->window);
}
static PyObject *Table_get_value_capacity(TableObject *self, void *c) {
    return PyLong_FromUnsignedLong(self->value_capacity);
}
static PyObject *get_impl(PyObject *self, void *c) { return PyLong_FromLong(IMPL_NATIVE); }

static PyMethodDef Table_methods[] = {
    {"lookup", (PyCFunction)Table_lookup, METH_VARARGS,
     "lookup(key, now) -> bytes | None"},
    {"insert", (PyCFunction)Table_insert, METH_VARARGS,
     "insert(key, value, now) -> 0 not stored, 1 stored, 2 stored by evicting"},
    {"clear", (PyCFunction)Table_clear, METH_NOARGS, "empty every slot"},
    {"stats", (PyCFunction)Table_stats, METH_NOARGS, "shared counters"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Table_getset[] = {
    {"n_slots", (getter)Table_get_n_slots, NULL, NULL, NULL},
    {"slot_size", (getter)Table_get_slot_size, NULL, NULL, NULL},
    {"window", (getter)Table_get_window, NULL, NULL, NULL},
    {"value_capacity", (getter)Table_get_value_capacity, NULL, NULL, NULL},
    {"impl", (getter)get_impl, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject TableType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "agentwall.cache._shmcache.Table",
    .tp_basicsize = sizeof(TableObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Fixed-slot seqlock hash table over a formatted shared-memory region.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Table_init,
    .tp_dealloc = (destructor)Table_dealloc,
    .tp_methods = Table_methods,
    .tp_getset = Table_getset,
};

/* ---------------------------------------------------------------- buckets */

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    int has_view;
    header_t *hdr;
    bucket_t *buckets;
    uint64_t n_buckets;
    uint32_t window;
} BucketsObject;

static int Buckets_init(BucketsObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"buffer", "fd", NULL};
    PyObject *buffer;
    int fd = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|i", kwlist, &buffer, &fd)) return -1;
    if (self->has_view) {
        PyErr_SetString(PyExc_RuntimeError, "already initialised");
        return -1;
    }
    header_t *hdr;
    if (attach(&self->view, buffer, "AWRLIMIT", &hdr) < 0) return -1;
    uint64_t n = hdr->count;
    uint32_t window = hdr->size;
    if (window < 1 || window > 64 || n < window ||
        n > ((uint64_t)self->view.len - HEADER_SIZE) / BUCKET_SIZE) {
        PyErr_SetString(PyExc_ValueError, "bad bucket geometry");
        PyBuffer_Release(&self->view);
        return -1;
    }
    self->has_view = 1;
    self->hdr = hdr;
    self->buckets = (bucket_t *)((char *)self->view.buf + HEADER_SIZE);
    self->n_buckets = n;
    self->window = window;
    return 0;
}

static void Buckets_dealloc(BucketsObject *self) {
    if (self->has_view) PyBuffer_Release(&self->view);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static inline uint64_t pack(uint64_t tokens, uint64_t tick) { return (tokens << 32) | (tick & M32); }

static inline uint64_t idle_ticks(uint64_t word, uint64_t tick) {
    uint64_t elapsed = (tick - (word & M32)) & M32;
    return elapsed >= SKEW ? 0 : elapsed;
}

/* The twin of agentwall.cache.tokens.refill_take: returns 0 and sets *out when
 * allowed, or the ticks to wait (> 0) when refused. */
static uint64_t refill_take(uint64_t word, uint64_t tick, uint64_t rate_q, uint64_t capacity,
                            uint64_t cost, uint64_t *out) {
    uint64_t tokens = word >> 32, last = word & M32;
    uint64_t elapsed = (tick - last) & M32;
    if (elapsed >= SKEW) {
        elapsed = 0;
    } else if (elapsed >= HALF) {
        last = tick;
        elapsed = 0;
    }
    if (tokens > capacity) tokens = capacity;
    if (elapsed && rate_q) {
        unsigned __int128 product = (unsigned __int128)elapsed * rate_q;
        unsigned __int128 gained128 = product >> RATE_SHIFT;
        if ((unsigned __int128)tokens + gained128 >= capacity) {
            tokens = capacity;
            last = tick;
        } else if (gained128) {
            uint64_t gained = (uint64_t)gained128;
            unsigned __int128 scaled = (unsigned __int128)gained << RATE_SHIFT;
            uint64_t charged = (uint64_t)((scaled + rate_q - 1) / rate_q);
            tokens += gained;
            last = (last + charged) & M32;
        }
    }
    if (tokens >= cost) {
        *out = pack(tokens - cost, last);
        return 0;
    }
    if (!rate_q) return M32;
    unsigned __int128 need = (unsigned __int128)(cost - tokens) << RATE_SHIFT;
    unsigned __int128 need_ticks = (need + rate_q - 1) / rate_q;
    uint64_t waited = (tick - last) & M32;
    if (waited >= SKEW) waited = 0;
    if (need_ticks <= (unsigned __int128)waited + 1) return 1;
    need_ticks -= waited;
    return need_ticks > M32 ? M32 : (uint64_t)need_ticks;
}

static PyObject *Buckets_take(BucketsObject *self, PyObject *args) {
    unsigned long long key, rate_q, capacity, cost, now_ns, reclaim_ticks;
    if (!PyArg_ParseTuple(args, "KKKKKK", &key, &rate_q, &capacity, &cost, &now_ns,
                          &reclaim_ticks))
        return NULL;
    if (key == 0) {
        PyErr_SetString(PyExc_ValueError, "bucket key must be a non-zero u64");
        return NULL;
    }
    if (capacity > M32 || cost > M32) {
        PyErr_SetString(PyExc_ValueError, "capacity and cost must fit 32 bits");
        return NULL;
    }
    uint64_t tick = ((uint64_t)now_ns >> TICK_SHIFT) & M32;
    uint64_t home = home_of(key, self->n_buckets, self->window);
    bucket_t *window = self->buckets + home;
    for (int attempt = 0; attempt < CAS_RETRIES; attempt++) {
        int64_t found = -1, free_ix = -1, victim = -1;
        uint64_t found_state = 0, victim_state = 0, victim_word = 0, victim_idle = 0;
        int claiming = 0;
        for (uint32_t i = 0; i < self->window; i++) {
            bucket_t *b = window + i;
            uint64_t state = __atomic_load_n(&b->state, __ATOMIC_ACQUIRE);
            uint64_t kind = state & 3;
            if (kind == KIND_READY) {
                if (ld(&b->key) == key) {
                    found = i;
                    found_state = state;
                    break;
                }
                uint64_t word = __atomic_load_n(&b->word, __ATOMIC_ACQUIRE);
                uint64_t idle = idle_ticks(word, tick);
                if (idle >= reclaim_ticks && (victim < 0 || idle > victim_idle)) {
                    victim = i;
                    victim_state = state;
                    victim_word = word;
                    victim_idle = idle;
                }
            } else if (kind == KIND_CLAIMING) {
                claiming = 1; /* maybe our own key, being claimed right now */
            } else {
                free_ix = i;
                break;
            }
        }
        if (found < 0) {
            /* Wait for claims in progress before making a second bucket for the
             * same key; a claimer that died mid-claim is given up on after half
             * the retry budget. */
            if (claiming && attempt < CAS_RETRIES / 2) {
                backoff(attempt);
                continue;
            }
            if (free_ix >= 0) {
                bucket_t *b = window + free_ix;
                uint64_t expected = 0, claimed = (1ULL << 2) | KIND_CLAIMING;
                if (!__atomic_compare_exchange_n(&b->state, &expected, claimed, 0,
                                                 __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
                    continue;
                st(&b->key, key);
                st(&b->word, pack(capacity, tick));
                found_state = (1ULL << 2) | KIND_READY;
                __atomic_store_n(&b->state, found_state, __ATOMIC_RELEASE);
                found = free_ix;
            } else if (victim >= 0) {
                bucket_t *b = window + victim;
                uint64_t generation = (victim_state >> 2) + 1;
                uint64_t expected = victim_state;
                if (!__atomic_compare_exchange_n(&b->state, &expected,
                                                 (generation << 2) | KIND_CLAIMING, 0,
                                                 __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
                    continue;
                uint64_t word = victim_word;
                if (!__atomic_compare_exchange_n(&b->word, &word, pack(capacity, tick), 0,
                                                 __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
                    /* Someone took from it since the idle check: it is in use.
                     * Give it back to its key (new generation) and rescan. */
                    __atomic_store_n(&b->state, (generation << 2) | KIND_READY,
                                     __ATOMIC_RELEASE);
                    continue;
                }
                st(&b->key, key);
                found_state = (generation << 2) | KIND_READY;
                __atomic_store_n(&b->state, found_state, __ATOMIC_RELEASE);
                found = victim;
            } else {
                bump(&self->hdr->torn_or_full);
                return PyLong_FromLongLong(FULL_RETRY_NS);
            }
        }
        bucket_t *b = window + found;
        uint64_t word = __atomic_load_n(&b->word, __ATOMIC_ACQUIRE);
        uint64_t next = 0;
        uint64_t retry = refill_take(word, tick, rate_q, capacity, cost, &next);
        if (retry) {
            if (__atomic_load_n(&b->state, __ATOMIC_ACQUIRE) != found_state) continue;
            return PyLong_FromUnsignedLongLong(retry << TICK_SHIFT);
        }
        if (!__atomic_compare_exchange_n(&b->word, &word, next, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_RELAXED))
            continue;
        if (__atomic_load_n(&b->state, __ATOMIC_ACQUIRE) != found_state) continue;
        return PyLong_FromLong(0);
    }
    bump(&self->hdr->busy);
    return PyLong_FromLongLong(FULL_RETRY_NS);
}

static PyObject *Buckets_peek(BucketsObject *self, PyObject *args) {
    unsigned long long key;
    if (!PyArg_ParseTuple(args, "K", &key)) return NULL;
    uint64_t home = home_of(key, self->n_buckets, self->window);
    for (uint32_t i = 0; i < self->window; i++) {
        bucket_t *b = self->buckets + home + i;
        uint64_t state = __atomic_load_n(&b->state, __ATOMIC_ACQUIRE);
        if ((state & 3) == KIND_READY && ld(&b->key) == key)
            return PyLong_FromUnsignedLongLong(__atomic_load_n(&b->word, __ATOMIC_ACQUIRE));
    }
    Py_RETURN_NONE;
}

static PyObject *Buckets_stats(BucketsObject *self, PyObject *Py_UNUSED(ignored)) {
    return Py_BuildValue("{sKsK}", "full",
                         (unsigned long long)__atomic_load_n(&self->hdr->torn_or_full,
                                                             __ATOMIC_RELAXED),
                         "busy",
                         (unsigned long long)__atomic_load_n(&self->hdr->busy, __ATOMIC_RELAXED));
}

static PyObject *Buckets_get_n_buckets(BucketsObject *self, void *c) {
    return PyLong_FromUnsignedLongLong(self->n_buckets);
}
static PyObject *Buckets_get_window(BucketsObject *self, void *c) {
    return PyLong_FromUnsignedLong(self->window);
}

static PyMethodDef Buckets_methods[] = {
    {"take", (PyCFunction)Buckets_take, METH_VARARGS,
     "take(key, rate_q, capacity, cost, now_ns, reclaim_ticks) -> 0 or retry-after ns"},
    {"peek", (PyCFunction)Buckets_peek, METH_VARARGS, "peek(key) -> raw word | None"},
    {"stats", (PyCFunction)Buckets_stats, METH_NOARGS, "shared counters"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Buckets_getset[] = {
    {"n_buckets", (getter)Buckets_get_n_buckets, NULL, NULL, NULL},
    {"window", (getter)Buckets_get_window, NULL, NULL, NULL},
    {"impl", (getter)get_impl, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject BucketsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "agentwall.cache._shmcache.Buckets",
    .tp_basicsize = sizeof(BucketsObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Token buckets updated by CAS in a formatted shared-memory region.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Buckets_init,
    .tp_dealloc = (destructor)Buckets_dealloc,
    .tp_methods = Buckets_methods,
    .tp_getset = Buckets_getset,
};

/* Exposed so tests can run the C arithmetic against the Python twin. */
static PyObject *mod_refill_take(PyObject *m, PyObject *args) {
    unsigned long long word, tick, rate_q, capacity, cost;
    if (!PyArg_ParseTuple(args, "KKKKK", &word, &tick, &rate_q, &capacity, &cost)) return NULL;
    if (capacity > M32 || cost > M32 || tick > M32) {
        PyErr_SetString(PyExc_ValueError, "out of range");
        return NULL;
    }
    uint64_t next = word;
    uint64_t retry = refill_take(word, tick, rate_q, capacity, cost, &next);
    return Py_BuildValue("KK", (unsigned long long)(retry ? word : next),
                         (unsigned long long)retry);
}

static PyMethodDef module_methods[] = {
    {"refill_take", mod_refill_take, METH_VARARGS,
     "refill_take(word, tick, rate_q, capacity, cost) -> (word, retry_ticks)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef shmcache_module = {
    PyModuleDef_HEAD_INIT, "agentwall.cache._shmcache",
    "Lock-free shared-memory decision table and token buckets.", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__shmcache(void) {
    if (PyType_Ready(&TableType) < 0 || PyType_Ready(&BucketsType) < 0) return NULL;
    PyObject *m = PyModule_Create(&shmcache_module);
    if (!m) return NULL;
    Py_INCREF(&TableType);
    if (PyModule_AddObject(m, "Table", (PyObject *)&TableType) < 0) goto fail;
    Py_INCREF(&BucketsType);
    if (PyModule_AddObject(m, "Buckets", (PyObject *)&BucketsType) < 0) goto fail;
    if (PyModule_AddIntConstant(m, "IMPL", IMPL_NATIVE) < 0) goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
