# A read cursor over protobuf wire bytes (_eds_wire.pyx).
cdef struct Cur:
    const unsigned char* p
    const unsigned char* end
