/*
 * guarded.h — for fuzz targets: the input copied to end right before an inaccessible page,
 * so a parser reading one byte past its input faults even where ASan's redzone would not
 * (inputs in libFuzzer's own buffers).
 */
#ifndef QG_FUZZ_GUARDED_H
#define QG_FUZZ_GUARDED_H

#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define GUARDED_MAX (256 * 1024)

/* Returns a copy of data ending right before an inaccessible page (or data itself if big). */
static const char *guarded_copy(const uint8_t *data, size_t size)
{
    static char *region;
    static size_t page;
    if (!region) {
        page = (size_t)sysconf(_SC_PAGESIZE);
        region = mmap(NULL, GUARDED_MAX + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (region == MAP_FAILED || mprotect(region + GUARDED_MAX, page, PROT_NONE) != 0) __builtin_trap();
    }
    if (size > GUARDED_MAX) return (const char *)data;
    char *p = region + GUARDED_MAX - size;
    if (size) memcpy(p, data, size);
    return p;
}

#endif
