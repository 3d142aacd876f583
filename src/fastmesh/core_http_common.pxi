# core_http_common.pxi: what both HTTP/1.1 sides share: downstream states,
# reason phrases, the 100 Continue line.



cdef dict REASONS = {
    100: b"Continue", 101: b"Switching Protocols", 102: b"Processing",
    103: b"Early Hints", 200: b"OK", 201: b"Created",
    202: b"Accepted", 204: b"No Content", 301: b"Moved Permanently", 302: b"Found",
    304: b"Not Modified", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden",
    404: b"Not Found", 405: b"Method Not Allowed", 408: b"Request Timeout",
    413: b"Payload Too Large", 414: b"URI Too Long",
    431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
    501: b"Not Implemented", 502: b"Bad Gateway", 503: b"Service Unavailable",
    504: b"Gateway Timeout", 505: b"HTTP Version Not Supported",
}

cdef bytes CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
