/*
 * agentwall.core._httphead: the byte-level half of the front-end's HTTP/1.1
 * head parsing, in C.
 *
 * scan_head(head: bytes) -> (first_line, headers, bad, line_count)
 *
 * It is the exact counterpart of agentwall.core.mcp_http.scan_head_py, which
 * is the reference and the fallback; tests hold the two to the same results
 * on hostile input.  Given the bytes before the blank line that ends a head:
 *
 *   1. Whole-head checks, in this order of precedence: a control character
 *      (anything but HTAB, SP..~ and obs-text 0x80-0xFF, CR and LF) raises
 *      ValueError("control character in the head"); otherwise a CR not
 *      followed by LF, or an LF not preceded by CR, raises
 *      ValueError("bare CR or LF in the head").
 *   2. The head is cut at each CRLF.  The first line is returned as it is.
 *   3. Each further line must be `token ":" value`.  The name is
 *      lower-cased (ASCII), the value stripped of SP and HTAB at both ends.
 *      At the first line that is not, scanning stops and `bad` is
 *      ("fold", line) when the line starts with SP or HTAB (obsolete line
 *      folding) and ("line", line) otherwise; `headers` holds the pairs
 *      before it.  Otherwise `bad` is None.
 *   4. line_count is the number of lines, the first one included.
 *
 * The callers decide what is an error and in which order (request line
 * first, then the headers before the bad one, then the bad line), so the
 * native and the Python parsers fail with the same message.
 *
 * Only Python's bytes and list APIs are used, and every index stays within
 * the bytes object's length.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* RFC 9110 tchar. */
static unsigned char token_table[256];
/* RFC 9110 field-value bytes plus CR and LF. */
static unsigned char head_table[256];

static void
init_tables(void)
{
    const char *tchars = "!#$%&'*+-.^_`|~0123456789"
                         "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    for (const char *p = tchars; *p; p++) {
        token_table[(unsigned char)*p] = 1;
    }
    head_table['\t'] = 1;
    head_table['\r'] = 1;
    head_table['\n'] = 1;
    for (int c = 0x20; c < 0x7F; c++) {
        head_table[c] = 1;
    }
    for (int c = 0x80; c < 0x100; c++) {
        head_table[c] = 1;
    }
}

static int
check_head(const unsigned char *s, Py_ssize_t n)
{
    int bare = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (!head_table[c]) {
            PyErr_SetString(PyExc_ValueError, "control character in the head");
            return -1;
        }
        if (c == '\r') {
            if (i + 1 >= n || s[i + 1] != '\n') {
                bare = 1;
            }
        }
        else if (c == '\n') {
            if (i == 0 || s[i - 1] != '\r') {
                bare = 1;
            }
        }
    }
    if (bare) {
        PyErr_SetString(PyExc_ValueError, "bare CR or LF in the head");
        return -1;
    }
    return 0;
}

/* The end of the line starting at `start`: the index of its CR, or n. */
static Py_ssize_t
line_end(const unsigned char *s, Py_ssize_t start, Py_ssize_t n)
{
    /* After check_head every CR starts a CRLF. */
    const void *cr = memchr(s + start, '\r', (size_t)(n - start));
    return cr == NULL ? n : (Py_ssize_t)((const unsigned char *)cr - s);
}

/* Appends (name.lower(), value.strip(" \t")) for s[start:end], or returns 1
   when the line is not a header line, or -1 on a Python error. */
static int
add_header(PyObject *headers, const unsigned char *s, Py_ssize_t start, Py_ssize_t end)
{
    Py_ssize_t colon = -1;
    for (Py_ssize_t i = start; i < end; i++) {
        if (s[i] == ':') {
            colon = i;
            break;
        }
        if (!token_table[s[i]]) {
            return 1;
        }
    }
    if (colon <= start) {
        return 1; /* no colon, or an empty name */
    }
    Py_ssize_t name_len = colon - start;
    PyObject *name = PyBytes_FromStringAndSize(NULL, name_len);
    if (name == NULL) {
        return -1;
    }
    char *out = PyBytes_AS_STRING(name);
    for (Py_ssize_t i = 0; i < name_len; i++) {
        unsigned char c = s[start + i];
        out[i] = (char)((c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c);
    }
    Py_ssize_t vstart = colon + 1;
    Py_ssize_t vend = end;
    while (vstart < vend && (s[vstart] == ' ' || s[vstart] == '\t')) {
        vstart++;
    }
    while (vend > vstart && (s[vend - 1] == ' ' || s[vend - 1] == '\t')) {
        vend--;
    }
    PyObject *value = PyBytes_FromStringAndSize((const char *)s + vstart, vend - vstart);
    if (value == NULL) {
        Py_DECREF(name);
        return -1;
    }
    PyObject *pair = PyTuple_Pack(2, name, value);
    Py_DECREF(name);
    Py_DECREF(value);
    if (pair == NULL) {
        return -1;
    }
    int rc = PyList_Append(headers, pair);
    Py_DECREF(pair);
    return rc;
}

static PyObject *
scan_head(PyObject *module, PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "scan_head() needs bytes");
        return NULL;
    }
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(arg);
    Py_ssize_t n = PyBytes_GET_SIZE(arg);
    if (check_head(s, n) < 0) {
        return NULL;
    }
    Py_ssize_t end = line_end(s, 0, n);
    PyObject *first = PyBytes_FromStringAndSize((const char *)s, end);
    PyObject *headers = PyList_New(0);
    PyObject *bad = NULL;
    Py_ssize_t lines = 1;
    if (first == NULL || headers == NULL) {
        goto error;
    }
    Py_ssize_t start = end + 2;
    while (end < n) {
        end = line_end(s, start, n);
        lines++;
        if (bad == NULL) {
            int rc = add_header(headers, s, start, end);
            if (rc < 0) {
                goto error;
            }
            if (rc > 0) {
                const char *kind = (start < end && (s[start] == ' ' || s[start] == '\t'))
                                       ? "fold"
                                       : "line";
                bad = Py_BuildValue("(sy#)", kind, (const char *)s + start, end - start);
                if (bad == NULL) {
                    goto error;
                }
            }
        }
        start = end + 2;
    }
    if (bad == NULL) {
        bad = Py_NewRef(Py_None);
    }
    PyObject *count = PyLong_FromSsize_t(lines);
    PyObject *result = count == NULL ? NULL : PyTuple_New(4);
    if (result == NULL) {
        Py_XDECREF(count);
        goto error;
    }
    /* PyTuple_SET_ITEM steals each reference. */
    PyTuple_SET_ITEM(result, 0, first);
    PyTuple_SET_ITEM(result, 1, headers);
    PyTuple_SET_ITEM(result, 2, bad);
    PyTuple_SET_ITEM(result, 3, count);
    return result;

error:
    Py_XDECREF(first);
    Py_XDECREF(headers);
    Py_XDECREF(bad);
    return NULL;
}

static PyMethodDef methods[] = {
    {"scan_head", scan_head, METH_O,
     "scan_head(head) -> (first_line, headers, bad, line_count); see the module source."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT,
    "agentwall.core._httphead",
    "The byte-level half of the front-end's HTTP/1.1 head parsing (C).",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__httphead(void)
{
    init_tables();
    return PyModule_Create(&moduledef);
}
