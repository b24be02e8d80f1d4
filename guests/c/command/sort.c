/*
 * A plain WASI command for taskbox's `abi = "command"` mode: the job's input arrives on
 * stdin, the output goes to stdout, and a non-zero exit status fails the job with what the
 * program wrote to stderr.
 *
 * It reads a JSON array of integers, such as `[3, -1, 2]`, and writes them sorted with their
 * sum: `{"sorted":[-1,2,3],"sum":4}`. Anything else (not an array, a number that is not an
 * integer or does not fit 64 bits, a sum that overflows) exits with status 1 and a message
 * naming the byte where the input went wrong.
 *
 * Nothing here knows about taskbox: the same program runs under any WASI runtime, e.g.
 * `echo '[3,1,2]' | wasmtime command.wasm`.
 */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads all of stdin into a NUL-terminated buffer; exits on failure. */
static char *read_all(size_t *length) {
    size_t capacity = 4096, used = 0;
    char *data = malloc(capacity);
    for (;;) {
        if (data == NULL) {
            fputs("sort: out of memory\n", stderr);
            exit(1);
        }
        used += fread(data + used, 1, capacity - used - 1, stdin);
        if (ferror(stdin)) {
            fprintf(stderr, "sort: reading stdin failed: %s\n", strerror(errno));
            exit(1);
        }
        if (feof(stdin)) {
            break;
        }
        capacity *= 2;
        data = realloc(data, capacity);
    }
    data[used] = '\0';
    *length = used;
    return data;
}

/* Reports bad input at byte `at` of `input` and exits with status 1. */
static void fail(const char *input, const char *at, const char *what) {
    fprintf(stderr, "sort: byte %zu: %s (expected a JSON array of integers)\n",
            (size_t)(at - input), what);
    exit(1);
}

static const char *skip_space(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') {
        p++;
    }
    return p;
}

static int compare(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int main(void) {
    size_t length;
    char *input = read_all(&length);
    if (strlen(input) != length) {
        fail(input, input + strlen(input), "a NUL byte");
    }

    size_t count = 0, capacity = 16;
    int64_t *numbers = malloc(capacity * sizeof *numbers);
    const char *p = skip_space(input);
    if (*p != '[') {
        fail(input, p, "not an array");
    }
    p = skip_space(p + 1);
    while (*p != ']') {
        if (count > 0) {
            if (*p != ',') {
                fail(input, p, *p == '\0' ? "the array is not closed" : "a `,` or `]` is missing");
            }
            p = skip_space(p + 1);
        }
        if (*p == '\0') {
            fail(input, p, "the array is not closed");
        }
        /* JSON integers: an optional minus, then digits without a leading zero. */
        const char *digits = *p == '-' ? p + 1 : p;
        if (*digits < '0' || *digits > '9' || (digits[0] == '0' && digits[1] >= '0' && digits[1] <= '9')) {
            fail(input, p, "not an integer");
        }
        char *end;
        errno = 0;
        long long value = strtoll(p, &end, 10);
        if (*end == '.' || *end == 'e' || *end == 'E') {
            fail(input, p, "not an integer");
        }
        if (errno == ERANGE) {
            fail(input, p, "the integer does not fit 64 bits");
        }
        if (count == capacity) {
            capacity *= 2;
            numbers = realloc(numbers, capacity * sizeof *numbers);
        }
        if (numbers == NULL) {
            fputs("sort: out of memory\n", stderr);
            return 1;
        }
        numbers[count++] = value;
        p = skip_space(end);
    }
    if (*skip_space(p + 1) != '\0') {
        fail(input, skip_space(p + 1), "text after the array");
    }

    qsort(numbers, count, sizeof *numbers, compare);
    int64_t sum = 0;
    for (size_t i = 0; i < count; i++) {
        if (__builtin_add_overflow(sum, numbers[i], &sum)) {
            fputs("sort: the sum does not fit 64 bits\n", stderr);
            return 1;
        }
    }
    fputs("{\"sorted\":[", stdout);
    for (size_t i = 0; i < count; i++) {
        printf(i == 0 ? "%" PRId64 : ",%" PRId64, numbers[i]);
    }
    printf("],\"sum\":%" PRId64 "}\n", sum);
    return 0;
}
