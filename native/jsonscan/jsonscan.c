/*
 * agentwall.core._jsonscan: the byte counts behind jsonrpc.parse's strictness
 * checks, in one pass instead of four.
 *
 * syntax_counts(data: bytes) -> (brackets, colons, escaped_colon_hint)
 *
 *   brackets            the number of '[' and '{' bytes (anywhere, strings
 *                       included): fewer than the depth limit cannot nest
 *                       deeper than it;
 *   colons              the number of ':' bytes (anywhere), compared with the
 *                       re-encoding's to find duplicate keys;
 *   escaped_colon_hint  True when the bytes contain `\u003`, the start of the
 *                       only escape that hides a colon from that count.
 *
 * It is the exact counterpart of agentwall.core.jsonrpc.syntax_counts_py,
 * which is the reference and the fallback; tests hold the two to the same
 * results on arbitrary bytes.  The loop is written so the compiler can
 * vectorise it (no branch, no table, one accumulator per count); the `\u003`
 * search runs only when the bytes hold a backslash at all.
 *
 * Only the buffer protocol is used, and every index stays within its length.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <stdint.h>


__attribute__((optimize("O3", "tree-vectorize"))) static void
count_bytes(const unsigned char *p, Py_ssize_t n, size_t *brackets, size_t *colons,
            size_t *backslashes)
{
    /* uint32 lanes, flushed every 2^20 bytes, so the sums never wrap. */
    size_t b_total = 0, c_total = 0, s_total = 0;
    while (n > 0) {
        Py_ssize_t chunk = n < (1 << 20) ? n : (1 << 20);
        uint32_t b = 0, c = 0, s = 0;
        for (Py_ssize_t i = 0; i < chunk; i++) {
            unsigned char ch = p[i];
            b += (ch == '[') | (ch == '{');
            c += ch == ':';
            s += ch == '\\';
        }
        b_total += b;
        c_total += c;
        s_total += s;
        p += chunk;
        n -= chunk;
    }
    *brackets = b_total;
    *colons = c_total;
    *backslashes = s_total;
}

static PyObject *
syntax_counts(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const unsigned char *data = (const unsigned char *)view.buf;
    Py_ssize_t length = view.len;
    size_t brackets, colons, backslashes;
    count_bytes(data, length, &brackets, &colons, &backslashes);
    int hint = 0;
    if (backslashes > 0 && length >= 5) {
        hint = memmem(data, (size_t)length, "\\u003", 5) != NULL;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(nnO)", (Py_ssize_t)brackets, (Py_ssize_t)colons,
                         hint ? Py_True : Py_False);
}

static PyMethodDef methods[] = {
    {"syntax_counts", syntax_counts, METH_O,
     "syntax_counts(data) -> (brackets, colons, escaped_colon_hint); see the module source."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT,
    "agentwall.core._jsonscan",
    "The byte counts behind jsonrpc.parse's strictness checks, in one pass (C).",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__jsonscan(void)
{
    return PyModule_Create(&moduledef);
}
