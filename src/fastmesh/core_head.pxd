# core_head.pxd: declarations of core_head.pxi (see _core.pxd)

cdef class HeaderList:
    cdef OutBuf buf
    cdef HeaderSlice* hs
    cdef int n, cap

    cdef inline void clear(self) noexcept
    cdef int add(self, const char* name, Py_ssize_t nl, const char* value, Py_ssize_t vl,
                 int flags) except -1
    cdef int add_fields(self, const char* base, HeaderSlice* hs, int n, int skip) except -1
    cdef int add_uint(self, const char* name, Py_ssize_t nl, unsigned long long v) except -1
    cdef int add_h1_lines(self, const char* p, Py_ssize_t n) except -1
    cdef inline const char* base(self) noexcept
