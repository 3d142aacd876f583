# _tls_tickets: TLS session ticket keys shared by every worker and rotated.
# Python-level API only (unavailable, new_slot, set_keys, attach): it is
# called by the control side when it builds SSLContexts, never per request.
