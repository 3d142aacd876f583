# cython: language_level=3
"""TLS session tickets with keys fastmesh chooses: shared by every worker, rotated.

OpenSSL gives each ``SSL_CTX`` random ticket keys of its own. Each worker
builds its own contexts, so a ticket issued by one worker is useless at
another (with ``SO_REUSEPORT`` a reconnect lands on any of them), and the
keys never change while the process lives. Python's ``ssl`` has no API for
either, so this module installs OpenSSL's ticket-key callback
(``SSL_CTX_set_tlsext_ticket_key_evp_cb``, Envoy's mechanism for its
``session_ticket_keys``) on the contexts control/tls.py builds.

Keys are Envoy's 80-byte format: 16 bytes of name, 32 of HMAC-SHA256 secret,
32 of AES-256-CBC key. A context is attached to a *slot* (one per listener);
the first key of a slot encrypts new tickets, every key of it decrypts
(a ticket under an older key resumes and is replaced by one under the
first, as OpenSSL's return value 2 asks).

No OpenSSL header or link is needed: every function is looked up at run
time in the very library Python's ``_ssl`` uses (``dlopen`` of ``_ssl``
with ``RTLD_NOLOAD``, then ``dlsym``, which searches its dependencies), so
the ``SSL_CTX`` pointers handed over come from the same OpenSSL. The
pointer is read from ``PySSLContext`` (its first field after the object
head, unchanged since Python 3.7) and checked before use: the options read
through it must equal ``SSLContext.options``. Anything missing (OpenSSL
1.1, a static build) makes ``unavailable()`` say why; the caller then keeps
OpenSSL's own per-context keys.

The callback runs inside ``SSL_do_handshake`` (the GIL released by
``_ssl``); it only reads the slot table, which Python writes from the same
event-loop thread between handshakes.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE

cdef extern from *:
    """
    #include <dlfcn.h>
    #include <string.h>
    #include <stdint.h>

    #define FM_KEY_LEN 80
    #define FM_MAX_KEYS 4
    #define FM_MAX_SLOTS 256

    typedef struct { const char *key; unsigned int data_type; void *data;
                     size_t data_size; size_t return_size; } fm_param;
    typedef int (*fm_ticket_cb)(void *ssl, unsigned char *name, unsigned char *iv,
                                void *cctx, void *hctx, int enc);

    typedef struct { int n; unsigned char keys[FM_MAX_KEYS][FM_KEY_LEN]; } fm_keyset;

    static struct {
        int ready;
        int ex_index;
        int (*set_cb)(void *, fm_ticket_cb);
        void *(*get_ssl_ctx)(const void *);
        void *(*get_ex_data)(const void *, int);
        int (*set_ex_data)(void *, int, void *);
        int (*new_index)(int, long, void *, void *, void *, void *);
        const void *(*aes_256_cbc)(void);
        int (*enc_init)(void *, const void *, void *, const unsigned char *, const unsigned char *);
        int (*dec_init)(void *, const void *, void *, const unsigned char *, const unsigned char *);
        int (*mac_set)(void *, const fm_param *);
        int (*rand_bytes)(unsigned char *, int);
        uint64_t (*get_options)(const void *);
        int n_slots;
        fm_keyset slots[FM_MAX_SLOTS];
    } fm;

    static const char *fm_resolve(const char *ssl_module) {
        void *h = dlopen(ssl_module, RTLD_NOW | RTLD_NOLOAD);
        if (h == NULL) return "the _ssl module is not loaded";
    #define FM_SYM(field, name) \\
        *(void **)(&fm.field) = dlsym(h, name); \\
        if (fm.field == NULL) return "OpenSSL has no " name " (OpenSSL 3 is needed)";
        FM_SYM(set_cb, "SSL_CTX_set_tlsext_ticket_key_evp_cb")
        FM_SYM(get_ssl_ctx, "SSL_get_SSL_CTX")
        FM_SYM(get_ex_data, "SSL_CTX_get_ex_data")
        FM_SYM(set_ex_data, "SSL_CTX_set_ex_data")
        FM_SYM(new_index, "CRYPTO_get_ex_new_index")
        FM_SYM(aes_256_cbc, "EVP_aes_256_cbc")
        FM_SYM(enc_init, "EVP_EncryptInit_ex")
        FM_SYM(dec_init, "EVP_DecryptInit_ex")
        FM_SYM(mac_set, "EVP_MAC_CTX_set_params")
        FM_SYM(rand_bytes, "RAND_bytes")
        FM_SYM(get_options, "SSL_CTX_get_options")
    #undef FM_SYM
        /* CRYPTO_EX_INDEX_SSL_CTX = 1 */
        fm.ex_index = fm.new_index(1, 0, NULL, NULL, NULL, NULL);
        if (fm.ex_index < 0) return "no SSL_CTX ex_data index";
        fm.ready = 1;
        return NULL;
    }

    static int fm_set_mac(void *hctx, unsigned char *hmac_key) {
        fm_param p[3] = {
            /* OSSL_PARAM_OCTET_STRING = 5, OSSL_PARAM_UTF8_STRING = 4 */
            {"key", 5, hmac_key, 32, 0},
            {"digest", 4, (void *)"SHA256", 6, 0},
            {NULL, 0, NULL, 0, 0},
        };
        return fm.mac_set(hctx, p);
    }

    static int fm_ticket_key_cb(void *ssl, unsigned char *name, unsigned char *iv,
                                void *cctx, void *hctx, int enc) {
        intptr_t slot = (intptr_t)fm.get_ex_data(fm.get_ssl_ctx(ssl), fm.ex_index);
        if (slot <= 0 || slot > fm.n_slots) return 0;     /* no keys: no ticket */
        fm_keyset *ks = &fm.slots[slot - 1];
        if (ks->n == 0) return 0;
        if (enc) {
            unsigned char *k = ks->keys[0];
            memcpy(name, k, 16);
            if (fm.rand_bytes(iv, 16) <= 0) return -1;
            if (fm.enc_init(cctx, fm.aes_256_cbc(), NULL, k + 48, iv) != 1) return -1;
            if (fm_set_mac(hctx, k + 16) != 1) return -1;
            return 1;
        }
        for (int i = 0; i < ks->n; i++) {
            unsigned char *k = ks->keys[i];
            if (memcmp(name, k, 16) == 0) {
                if (fm_set_mac(hctx, k + 16) != 1) return -1;
                if (fm.dec_init(cctx, fm.aes_256_cbc(), NULL, k + 48, iv) != 1) return -1;
                return i == 0 ? 1 : 2;   /* 2: resume, and renew under the current key */
            }
        }
        return 0;                         /* unknown key: a full handshake */
    }

    static int fm_attach(void *ctx, int slot) {
        if (fm.set_ex_data(ctx, fm.ex_index, (void *)(intptr_t)(slot + 1)) != 1) return 0;
        return fm.set_cb(ctx, fm_ticket_key_cb) == 1;
    }

    static void *fm_ctx_of(PyObject *o) {
        /* PySSLContext: PyObject_HEAD, then SSL_CTX *ctx */
        return *(void **)((char *)o + sizeof(PyObject));
    }
    static unsigned long long fm_options(void *ctx) { return fm.get_options(ctx); }
    static int fm_slot_count(void) { return fm.n_slots; }
    static int fm_new_slot(void) {
        if (fm.n_slots >= FM_MAX_SLOTS) return -1;
        fm.slots[fm.n_slots].n = 0;
        return fm.n_slots++;
    }
    static void fm_set_count(int slot, int n) { fm.slots[slot].n = n; }
    static void fm_set_key(int slot, int i, const char *key) {
        memcpy(fm.slots[slot].keys[i], key, FM_KEY_LEN);
    }
    """
    int FM_KEY_LEN, FM_MAX_KEYS, FM_MAX_SLOTS
    const char* fm_resolve(const char* ssl_module)
    int fm_attach(void* ctx, int slot)
    void* fm_ctx_of(object o)
    unsigned long long fm_options(void* ctx)
    int fm_slot_count()
    int fm_new_slot()
    void fm_set_count(int slot, int n)
    void fm_set_key(int slot, int i, const char* key)


cdef str _why_not = None
cdef bint _resolved = False


cdef _resolve():
    global _why_not, _resolved
    if _resolved:
        return
    _resolved = True
    try:
        import ssl, _ssl
    except ImportError:
        _why_not = "Python has no ssl module"
        return
    path = _ssl.__file__.encode()
    cdef const char* err = fm_resolve(path)
    if err != NULL:
        _why_not = err.decode()


def unavailable():
    """None when tickets can be keyed here, else the reason they cannot."""
    _resolve()
    return _why_not


def new_slot():
    """A new, empty key slot (one per listener); at most 256 per process."""
    _resolve()
    if _why_not is not None:
        raise RuntimeError(_why_not)
    cdef int slot = fm_new_slot()
    if slot < 0:
        raise RuntimeError("too many TLS ticket key slots")
    return slot


def set_keys(int slot, keys):
    """The slot's keys from now on (80 bytes each, at most 4): the first
    encrypts, all decrypt. An empty list stops issuing tickets."""
    if slot < 0 or slot >= fm_slot_count():
        raise ValueError(f"no ticket key slot {slot}")
    keys = [bytes(k) for k in keys]
    if len(keys) > FM_MAX_KEYS:
        raise ValueError(f"at most {FM_MAX_KEYS} ticket keys")
    cdef bytes k
    for k in keys:
        if PyBytes_GET_SIZE(k) != FM_KEY_LEN:
            raise ValueError(f"a session ticket key is {FM_KEY_LEN} bytes, not {len(k)}")
    # Written in place: the callback reads this table during handshakes,
    # which run on this same thread, so no lock; the count goes last.
    cdef int i = 0
    fm_set_count(slot, 0)
    for k in keys:
        fm_set_key(slot, i, PyBytes_AS_STRING(k))
        i += 1
    fm_set_count(slot, i)


def attach(ctx, int slot):
    """Make ``ctx`` (an ``ssl.SSLContext``) issue and accept tickets with the
    slot's keys."""
    import ssl
    if not isinstance(ctx, ssl.SSLContext):
        raise TypeError("expected an ssl.SSLContext")
    _resolve()
    if _why_not is not None:
        raise RuntimeError(_why_not)
    if slot < 0 or slot >= fm_slot_count():
        raise ValueError(f"no ticket key slot {slot}")
    cdef void* p = fm_ctx_of(ctx)
    # The layout check: the options read through the pointer are the
    # context's own (fastmesh's contexts set OP_NO_COMPRESSION and
    # OP_NO_RENEGOTIATION, so they differ from any fresh context's).
    if p == NULL or fm_options(p) != <unsigned long long>int(ctx.options):
        raise RuntimeError("cannot reach the SSL_CTX of this SSLContext")
    if not fm_attach(p, slot):
        raise RuntimeError("OpenSSL refused the ticket key callback")
