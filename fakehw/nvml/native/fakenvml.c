/*
 * libnvidia-ml.so.1 for the fakehw daemon: NVIDIA's NVML API (compiled against
 * NVIDIA's own nvml.h) answering from the daemon's per-node snapshot in shared
 * memory (fakehw/contract/nvmlshm.py; docs/protocol.md, "publish").
 *
 * nvmlInit asks the daemon once, over its Unix socket, to publish the node
 * FAKEHW_NODE names (default 0), then maps the file read-only; every other call
 * copies what it needs out of the mapping under the file's seqlock: no round trip,
 * no lock shared between callers, so any number of threads may call at once.
 * A file its daemon marked closed, or one whose tick has stood still for
 * STALE_NS, makes the next call ask again (a restarted daemon); a forked child
 * keeps its parent's mapping and asks for its own once the parent's lease ends.
 *
 * Values and refusals follow fakehw/nvml/library.py (the Python layer, the same
 * records), and a real H100's answers (tests/real/ * /static/pynvml.txt).
 */
#define _GNU_SOURCE
#define NVML_NO_UNVERSIONED_FUNC_DEFS
#include <nvml.h>

#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "fakehw_snapshot.h"

#define EXPORT __attribute__((visibility("default")))
#define MAX_DEVICES 64
#define STALE_NS 1500000000LL      /* no new tick for 1.5 s (15 ticks): the daemon is gone */
#define RETRY_NS 1000000000LL      /* ask a daemon again at most once a second */
#define MIB (1024ULL * 1024ULL)
#define SETTER_TIMEOUT_S 10L       /* a setter waits this long for the daemon's answer */
#define DRIVER_BRANCH "580.159.04"

struct nvmlDevice_st {
    unsigned int index;
};

static struct nvmlDevice_st devices[MAX_DEVICES];
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static int refcount;
/* The node's file, mapped read-only, with its size and identity, published as one
 * pointer (a reader never pairs one mapping with another's size). Never unmapped or
 * freed: a reader may still copy from an old one; a new one is made only for a new
 * file (a restarted daemon), so there are as many as daemons seen. */
struct snapshot_map {
    const unsigned char *base;
    size_t size;
    dev_t dev;
    ino_t ino;
};
static struct snapshot_map *mapping;
static long long last_tick_seen;
static long long tick_changed_ns;
static long long asked_ns;

/* ------------------------------------------------------------------ helpers */
static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void runtime_dir(char *out, size_t size) {
    const char *explicit_dir = getenv("FAKEHW_RUNTIME_DIR");
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    struct stat st;
    if (explicit_dir && explicit_dir[0] == '/')
        snprintf(out, size, "%s", explicit_dir);
    else if (xdg && xdg[0] == '/' && stat(xdg, &st) == 0 && S_ISDIR(st.st_mode))
        snprintf(out, size, "%s/fakehw", xdg);
    else
        snprintf(out, size, "/tmp/fakehw-%u", (unsigned)getuid());
}

/* The node argument of the publish request: FAKEHW_NODE as an index or a hostname
 * (letters, digits, '.', '-', '_' only: nothing to escape in JSON). */
static int node_argument(char *out, size_t size) {
    const char *node = getenv("FAKEHW_NODE");
    if (!node || !*node) {
        snprintf(out, size, "0");
        return 0;
    }
    int digits = 1;
    for (const char *p = node; *p; p++) {
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              *p == '.' || *p == '-' || *p == '_'))
            return -1;
        if (*p < '0' || *p > '9')
            digits = 0;
    }
    if (strlen(node) > 100)
        return -1;
    snprintf(out, size, digits ? "%s" : "\"%s\"", node);
    return 0;
}

/* One request on the daemon's socket and its one-line reply, within ``timeout_s``. */
static nvmlReturn_t daemon_exchange(const char *request, char *reply, size_t size,
                                    long timeout_s) {
    char dir[4096];
    runtime_dir(dir, sizeof dir);
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if ((size_t)snprintf(address.sun_path, sizeof address.sun_path, "%s/daemon.sock", dir) >=
        sizeof address.sun_path)
        return NVML_ERROR_DRIVER_NOT_LOADED;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NVML_ERROR_DRIVER_NOT_LOADED;
    struct timeval timeout = {.tv_sec = timeout_s};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) {
        close(fd);
        return NVML_ERROR_DRIVER_NOT_LOADED; /* no daemon: as a machine without the driver */
    }
    size_t length = strlen(request), got = 0;
    int ok = write(fd, request, length) == (ssize_t)length;
    while (ok && got < size - 1) {
        ssize_t n = read(fd, reply + got, size - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
        if (memchr(reply, '\n', got))
            break;
    }
    close(fd);
    reply[got] = 0;
    if (!ok || (!strstr(reply, "\"ok\":true") && !strstr(reply, "\"ok\": true")))
        return strstr(reply, "not_found") ? NVML_ERROR_NOT_FOUND
               : strstr(reply, "bad_request") ? NVML_ERROR_INVALID_ARGUMENT
                                              : NVML_ERROR_UNKNOWN;
    return NVML_SUCCESS;
}

/* Publish this process's node; fills the snapshot file's path from the reply. */
static nvmlReturn_t ask_daemon(char *path, size_t size) {
    char node[128], request[256], reply[8192];
    if (node_argument(node, sizeof node) != 0)
        return NVML_ERROR_INVALID_ARGUMENT;
    snprintf(request, sizeof request, "{\"id\":1,\"op\":\"publish\",\"node\":%s}\n", node);
    nvmlReturn_t ok = daemon_exchange(request, reply, sizeof reply, 1); /* a getter waits */
    if (ok != NVML_SUCCESS)
        return ok;
    const char *key = strstr(reply, "\"path\":");
    if (!key)
        return NVML_ERROR_UNKNOWN;
    key = strchr(key + 7, '"');
    const char *end = key ? strchr(key + 1, '"') : NULL;
    if (!end || (size_t)(end - key - 1) >= size)
        return NVML_ERROR_UNKNOWN;
    memcpy(path, key + 1, (size_t)(end - key - 1));
    path[end - key - 1] = 0;
    return NVML_SUCCESS;
}

/* Ask for the node and map its file (the caller holds init_lock). */
static nvmlReturn_t attach_snapshot(void) {
    char path[4096];
    asked_ns = now_ns();
    nvmlReturn_t asked = ask_daemon(path, sizeof path);
    if (asked != NVML_SUCCESS)
        return asked;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return NVML_ERROR_UNKNOWN;
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_uid != getuid() || (size_t)st.st_size < sizeof(fakehw_header_t)) {
        close(fd);
        return NVML_ERROR_UNKNOWN;
    }
    struct snapshot_map *current = __atomic_load_n(&mapping, __ATOMIC_ACQUIRE);
    if (current && current->dev == st.st_dev && current->ino == st.st_ino &&
        current->size == (size_t)st.st_size) {
        close(fd); /* the same file (an init after a shutdown): the same mapping */
        last_tick_seen = -1;
        tick_changed_ns = now_ns();
        return NVML_SUCCESS;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return NVML_ERROR_UNKNOWN;
    const fakehw_header_t *header = map;
    if (memcmp(header->magic, FAKEHW_SNAPSHOT_MAGIC, 8) != 0 ||
        header->layout_version != FAKEHW_SNAPSHOT_LAYOUT ||
        header->gpu_record_size != sizeof(fakehw_gpu_t) ||
        header->process_record_size != sizeof(fakehw_process_t)) {
        munmap(map, (size_t)st.st_size);
        return NVML_ERROR_LIB_RM_VERSION_MISMATCH;
    }
    struct snapshot_map *made = malloc(sizeof *made);
    if (!made) {
        munmap(map, (size_t)st.st_size);
        return NVML_ERROR_MEMORY;
    }
    *made = (struct snapshot_map){map, (size_t)st.st_size, st.st_dev, st.st_ino};
    __atomic_store_n(&mapping, made, __ATOMIC_RELEASE);
    last_tick_seen = -1;
    tick_changed_ns = now_ns();
    return NVML_SUCCESS;
}

/* The daemon went away (its file closed, or no tick for STALE_NS): ask again, at
 * most once a second, without holding up callers that find the lock taken. */
static void maybe_reattach(void) {
    if (now_ns() - __atomic_load_n(&asked_ns, __ATOMIC_RELAXED) < RETRY_NS)
        return;
    if (pthread_mutex_trylock(&init_lock) != 0)
        return;
    if (refcount > 0 && now_ns() - asked_ns >= RETRY_NS)
        attach_snapshot();
    pthread_mutex_unlock(&init_lock);
}

/* Copy ``size`` bytes at ``offset`` (and the header) out of the mapping as one
 * consistent snapshot. */
static nvmlReturn_t copy_snapshot(fakehw_header_t *header, size_t offset, void *out, size_t size) {
    for (int attempt = 0; attempt < 2; attempt++) {
        const struct snapshot_map *map = __atomic_load_n(&mapping, __ATOMIC_ACQUIRE);
        if (!map || __atomic_load_n(&refcount, __ATOMIC_RELAXED) <= 0)
            return NVML_ERROR_UNINITIALIZED;
        const unsigned char *base = map->base;
        const fakehw_header_t *live = (const fakehw_header_t *)base;
        if (offset + size > map->size)
            return NVML_ERROR_INVALID_ARGUMENT;
        int consistent = 0;
        for (int spin = 0; spin < 20000 && !consistent; spin++) {
            uint64_t before = __atomic_load_n(&live->sequence, __ATOMIC_ACQUIRE);
            if (before & 1) {
                sched_yield(); /* a write is under way: it takes microseconds */
                continue;
            }
            memcpy(header, base, sizeof *header);
            if (size)
                memcpy(out, base + offset, size);
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            consistent = __atomic_load_n(&live->sequence, __ATOMIC_RELAXED) == before;
        }
        if (!consistent)
            return NVML_ERROR_UNKNOWN; /* a writer stopped half way (a frozen daemon) */
        long long now = now_ns();
        if ((long long)header->tick != __atomic_load_n(&last_tick_seen, __ATOMIC_RELAXED)) {
            __atomic_store_n(&last_tick_seen, (long long)header->tick, __ATOMIC_RELAXED);
            __atomic_store_n(&tick_changed_ns, now, __ATOMIC_RELAXED);
        }
        int stale = now - __atomic_load_n(&tick_changed_ns, __ATOMIC_RELAXED) > STALE_NS;
        if (!header->closed && !stale)
            return NVML_SUCCESS;
        const struct snapshot_map *old = map;
        maybe_reattach();
        if (__atomic_load_n(&mapping, __ATOMIC_ACQUIRE) == old)
            return NVML_ERROR_UNKNOWN; /* no daemon to answer: nothing current to say */
    }
    return NVML_ERROR_UNKNOWN;
}

static nvmlReturn_t read_header(fakehw_header_t *header) {
    return copy_snapshot(header, 0, NULL, 0);
}

static size_t gpu_offset(unsigned int index) {
    return sizeof(fakehw_header_t) + (size_t)index * sizeof(fakehw_gpu_t);
}

/* The GPU a handle names: INVALID_ARGUMENT for a stranger, GPU_IS_LOST for one
 * fallen off the bus. */
static nvmlReturn_t read_gpu(nvmlDevice_t device, fakehw_gpu_t *gpu) {
    if (!device || device < devices || device >= devices + MAX_DEVICES)
        return NVML_ERROR_INVALID_ARGUMENT;
    fakehw_header_t header;
    nvmlReturn_t ok = copy_snapshot(&header, gpu_offset(device->index), gpu, sizeof *gpu);
    if (ok != NVML_SUCCESS)
        return ok;
    if (device->index >= header.gpu_count)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (gpu->lost)
        return NVML_ERROR_GPU_IS_LOST;
    return NVML_SUCCESS;
}

/* The processes on the node, in one consistent copy: ``*out`` is the caller's to free
 * (the heap, not thread-local storage: a program's small thread stacks stay usable). */
static nvmlReturn_t read_processes(fakehw_process_t **out, unsigned int *count,
                                   fakehw_header_t *header) {
    for (int attempt = 0; attempt < 3; attempt++) {
        nvmlReturn_t ok = read_header(header);
        if (ok != NVML_SUCCESS)
            return ok;
        unsigned int gpus = header->gpu_count, n = header->process_count;
        if (n > FAKEHW_SNAPSHOT_MAX_PROCESSES)
            n = FAKEHW_SNAPSHOT_MAX_PROCESSES;
        fakehw_process_t *found = malloc(((size_t)n + 1) * sizeof *found);
        if (!found)
            return NVML_ERROR_MEMORY;
        size_t offset = sizeof(fakehw_header_t) + (size_t)gpus * sizeof(fakehw_gpu_t);
        fakehw_header_t again;
        ok = copy_snapshot(&again, offset, found, (size_t)n * sizeof *found);
        if (ok != NVML_SUCCESS) {
            free(found);
            return ok;
        }
        if (again.gpu_count == gpus && again.process_count == header->process_count) {
            for (unsigned int i = 0; i < n; i++) /* a name always ends */
                found[i].name[sizeof found[i].name - 1] = 0;
            *header = again;
            *out = found;
            *count = n;
            return NVML_SUCCESS;
        }
        free(found); /* the table changed between the two reads: again */
    }
    return NVML_ERROR_UNKNOWN;
}

static nvmlReturn_t write_string(char *buffer, unsigned int length, const char *text) {
    if (!buffer)
        return NVML_ERROR_INVALID_ARGUMENT;
    size_t need = strlen(text) + 1;
    if (length < need)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(buffer, text, need);
    return NVML_SUCCESS;
}

#define GPU_OR_RETURN(device, gpu)                   \
    fakehw_gpu_t gpu;                                \
    do {                                             \
        nvmlReturn_t _ok = read_gpu((device), &gpu); \
        if (_ok != NVML_SUCCESS)                     \
            return _ok;                              \
    } while (0)

/* As the driver: a call before nvmlInit is UNINITIALIZED, whatever its arguments. */
#define CHECK_INIT()                                              \
    do {                                                          \
        if (__atomic_load_n(&refcount, __ATOMIC_ACQUIRE) <= 0)    \
            return NVML_ERROR_UNINITIALIZED;                      \
    } while (0)

#define NEED(pointer)                          \
    do {                                       \
        CHECK_INIT();                          \
        if (!(pointer))                        \
            return NVML_ERROR_INVALID_ARGUMENT; \
    } while (0)

/* --------------------------------------------------------------- init, errors */
static void after_fork_child(void) {
    pthread_mutex_init(&init_lock, NULL); /* the parent's holder does not exist here */
}

static void __attribute__((constructor)) loaded(void) {
    for (unsigned int i = 0; i < MAX_DEVICES; i++)
        devices[i].index = i;
    pthread_atfork(NULL, NULL, after_fork_child);
}

EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    pthread_mutex_lock(&init_lock);
    nvmlReturn_t ok = NVML_SUCCESS;
    if (refcount == 0 || !mapping)
        ok = attach_snapshot();
    if (ok == NVML_SUCCESS)
        __atomic_add_fetch(&refcount, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&init_lock);
    return ok;
}

EXPORT nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
EXPORT nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }

EXPORT nvmlReturn_t nvmlShutdown(void) {
    pthread_mutex_lock(&init_lock);
    nvmlReturn_t ok = NVML_SUCCESS;
    if (refcount == 0)
        ok = NVML_ERROR_UNINITIALIZED;
    else
        __atomic_sub_fetch(&refcount, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&init_lock);
    return ok;
}

EXPORT const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_ALREADY_INITIALIZED: return "Already Initialized";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_INSUFFICIENT_POWER: return "Insufficient External Power";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_IRQ_ISSUE: return "Interrupt Request Issue";
    case NVML_ERROR_LIBRARY_NOT_FOUND: return "NVML Shared Library Not Found";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    case NVML_ERROR_CORRUPTED_INFOROM: return "Corrupted infoROM";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_LIB_RM_VERSION_MISMATCH: return "RM has detected an NVML/RM version mismatch.";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument version mismatch";
    default: return "Unknown Error";
    }
}

/* ------------------------------------------------------------------- system */
EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    fakehw_header_t header;
    nvmlReturn_t ok = read_header(&header);
    return ok != NVML_SUCCESS ? ok : write_string(version, length, header.driver_version);
}

EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    fakehw_header_t header;
    nvmlReturn_t ok = read_header(&header);
    return ok != NVML_SUCCESS ? ok : write_string(version, length, header.nvml_version);
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *version) {
    NEED(version);
    fakehw_header_t header;
    nvmlReturn_t ok = read_header(&header);
    if (ok == NVML_SUCCESS)
        *version = (int)header.cuda_version;
    return ok;
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *version) {
    return nvmlSystemGetCudaDriverVersion(version);
}

/* As the driver: the name cut to the caller's buffer (not INSUFFICIENT_SIZE). */
EXPORT nvmlReturn_t nvmlSystemGetProcessName(unsigned int pid, char *name, unsigned int length) {
    CHECK_INIT();
    if (!name || length == 0)
        return NVML_ERROR_INVALID_ARGUMENT;
    fakehw_header_t header;
    fakehw_process_t *processes;
    unsigned int count;
    nvmlReturn_t ok = read_processes(&processes, &count, &header);
    if (ok != NVML_SUCCESS)
        return ok;
    ok = NVML_ERROR_NOT_FOUND;
    for (unsigned int i = 0; i < count; i++)
        if (processes[i].pid == pid) {
            snprintf(name, length, "%s", processes[i].name);
            ok = NVML_SUCCESS;
            break;
        }
    free(processes);
    return ok;
}

/* ------------------------------------------------------------------ devices */
EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    NEED(count);
    fakehw_header_t header;
    nvmlReturn_t ok = read_header(&header);
    if (ok == NVML_SUCCESS)
        *count = header.gpu_count < MAX_DEVICES ? header.gpu_count : MAX_DEVICES;
    return ok;
}

EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    NEED(device);
    fakehw_header_t header;
    nvmlReturn_t ok = read_header(&header);
    if (ok != NVML_SUCCESS)
        return ok;
    if (index >= header.gpu_count || index >= MAX_DEVICES)
        return NVML_ERROR_INVALID_ARGUMENT;
    fakehw_gpu_t gpu;
    ok = read_gpu(&devices[index], &gpu);
    if (ok == NVML_SUCCESS)
        *device = &devices[index];
    return ok;
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

/* The first GPU whose field ``field`` (a string of the record) equals ``wanted``. */
static nvmlReturn_t find_device(size_t field, const char *wanted, nvmlDevice_t *device) {
    NEED(wanted);
    NEED(device);
    fakehw_header_t header;
    nvmlReturn_t ok = read_header(&header);
    if (ok != NVML_SUCCESS)
        return ok;
    for (unsigned int i = 0; i < header.gpu_count && i < MAX_DEVICES; i++) {
        fakehw_gpu_t gpu;
        ok = copy_snapshot(&header, gpu_offset(i), &gpu, sizeof gpu);
        if (ok != NVML_SUCCESS)
            return ok;
        if (strcasecmp((const char *)&gpu + field, wanted) == 0) {
            if (gpu.lost)
                return NVML_ERROR_GPU_IS_LOST;
            *device = &devices[i];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    return find_device(offsetof(fakehw_gpu_t, uuid), uuid, device);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleBySerial(const char *serial, nvmlDevice_t *device) {
    return find_device(offsetof(fakehw_gpu_t, serial), serial, device);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *bus_id, nvmlDevice_t *device) {
    NEED(bus_id);
    char wanted[64];
    const char *first = strchr(bus_id, ':');
    if (first && !strchr(first + 1, ':'))
        snprintf(wanted, sizeof wanted, "00000000:%s", bus_id); /* "18:00.0" */
    else if (first && first - bus_id == 4)
        snprintf(wanted, sizeof wanted, "0000%s", bus_id); /* "0000:18:00.0" */
    else
        snprintf(wanted, sizeof wanted, "%s", bus_id);
    return find_device(offsetof(fakehw_gpu_t, bus_id), wanted, device);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByPciBusId(const char *bus_id, nvmlDevice_t *device) {
    return nvmlDeviceGetHandleByPciBusId_v2(bus_id, device);
}

/* Simple getters: one field of the GPU's record into an unsigned int. */
#define UINT_GETTER(function, expression)                                    \
    EXPORT nvmlReturn_t function(nvmlDevice_t device, unsigned int *out) {   \
        NEED(out);                                                           \
        GPU_OR_RETURN(device, gpu);                                          \
        *out = (unsigned int)(expression);                                   \
        return NVML_SUCCESS;                                                 \
    }

#define STRING_GETTER(function, field)                                                 \
    EXPORT nvmlReturn_t function(nvmlDevice_t device, char *out, unsigned int length) { \
        GPU_OR_RETURN(device, gpu);                                                    \
        return write_string(out, length, gpu.field);                                   \
    }

UINT_GETTER(nvmlDeviceGetIndex, gpu.index)
UINT_GETTER(nvmlDeviceGetMinorNumber, gpu.minor_number)
UINT_GETTER(nvmlDeviceGetBoardId, gpu.board_id)
UINT_GETTER(nvmlDeviceGetModuleId, gpu.module_id)
UINT_GETTER(nvmlDeviceGetNumGpuCores, gpu.cuda_cores)
UINT_GETTER(nvmlDeviceGetMemoryBusWidth, gpu.memory_bus_width_bits)
UINT_GETTER(nvmlDeviceGetMultiGpuBoard, 0)
UINT_GETTER(nvmlDeviceGetNumFans, gpu.fan_count)
UINT_GETTER(nvmlDeviceGetMaxMigDeviceCount, 7)
UINT_GETTER(nvmlDeviceGetCurrPcieLinkGeneration, gpu.pcie_gen_current)
UINT_GETTER(nvmlDeviceGetCurrPcieLinkWidth, gpu.pcie_width_current)
UINT_GETTER(nvmlDeviceGetMaxPcieLinkGeneration, gpu.pcie_gen_max)
UINT_GETTER(nvmlDeviceGetGpuMaxPcieLinkGeneration, gpu.pcie_gen_max)
UINT_GETTER(nvmlDeviceGetMaxPcieLinkWidth, gpu.pcie_width_max)
UINT_GETTER(nvmlDeviceGetPcieSpeed, gpu.pcie_gen_max >= 5 ? 32000 : 16000)
UINT_GETTER(nvmlDeviceGetPcieReplayCounter, 0)
UINT_GETTER(nvmlDeviceGetPowerUsage, gpu.power_draw_mw)
UINT_GETTER(nvmlDeviceGetPowerManagementLimit, gpu.power_limit_mw)
UINT_GETTER(nvmlDeviceGetEnforcedPowerLimit, gpu.power_limit_mw)
UINT_GETTER(nvmlDeviceGetPowerManagementDefaultLimit, gpu.power_default_mw)
UINT_GETTER(nvmlDeviceIsMigDeviceHandle, 0)

STRING_GETTER(nvmlDeviceGetName, name)
STRING_GETTER(nvmlDeviceGetUUID, uuid)
STRING_GETTER(nvmlDeviceGetSerial, serial)
STRING_GETTER(nvmlDeviceGetBoardPartNumber, board_part_number)
STRING_GETTER(nvmlDeviceGetVbiosVersion, vbios_version)
STRING_GETTER(nvmlDeviceGetInforomImageVersion, inforom_image)

/* Enums and modes: fixed answers of a DGX's GPU, after checking the handle. */
#define ENUM_GETTER(function, type, value)                           \
    EXPORT nvmlReturn_t function(nvmlDevice_t device, type *out) {   \
        NEED(out);                                                   \
        GPU_OR_RETURN(device, gpu);                                  \
        (void)gpu;                                                   \
        *out = (type)(value);                                        \
        return NVML_SUCCESS;                                         \
    }

ENUM_GETTER(nvmlDeviceGetBrand, nvmlBrandType_t, NVML_BRAND_NVIDIA)
ENUM_GETTER(nvmlDeviceGetComputeMode, nvmlComputeMode_t, NVML_COMPUTEMODE_DEFAULT)
ENUM_GETTER(nvmlDeviceGetPersistenceMode, nvmlEnableState_t,
            gpu.persistence_mode ? NVML_FEATURE_ENABLED : NVML_FEATURE_DISABLED)
ENUM_GETTER(nvmlDeviceGetDisplayMode, nvmlEnableState_t, NVML_FEATURE_ENABLED)
ENUM_GETTER(nvmlDeviceGetDisplayActive, nvmlEnableState_t, NVML_FEATURE_DISABLED)
ENUM_GETTER(nvmlDeviceGetVirtualizationMode, nvmlGpuVirtualizationMode_t, NVML_GPU_VIRTUALIZATION_MODE_NONE)
ENUM_GETTER(nvmlDeviceGetPowerManagementMode, nvmlEnableState_t, NVML_FEATURE_ENABLED)
ENUM_GETTER(nvmlDeviceGetPowerSource, nvmlPowerSource_t, NVML_POWER_SOURCE_AC)
ENUM_GETTER(nvmlDeviceGetDefaultEccMode, nvmlEnableState_t, NVML_FEATURE_ENABLED)

EXPORT nvmlReturn_t nvmlDeviceGetArchitecture(nvmlDevice_t device, nvmlDeviceArchitecture_t *out) {
    NEED(out);
    GPU_OR_RETURN(device, gpu);
    *out = gpu.architecture;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPerformanceState(nvmlDevice_t device, nvmlPstates_t *out) {
    NEED(out);
    GPU_OR_RETURN(device, gpu);
    *out = (nvmlPstates_t)gpu.pstate;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerState(nvmlDevice_t device, nvmlPstates_t *out) {
    return nvmlDeviceGetPerformanceState(device, out);
}

EXPORT nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major, int *minor) {
    NEED(major);
    NEED(minor);
    GPU_OR_RETURN(device, gpu);
    *major = (int)gpu.cc_major;
    *minor = (int)gpu.cc_minor;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    NEED(pci);
    GPU_OR_RETURN(device, gpu);
    memset(pci, 0, sizeof *pci);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%.15s", gpu.bus_id + 4);
    snprintf(pci->busId, sizeof pci->busId, "%s", gpu.bus_id);
    pci->domain = gpu.pci_domain;
    pci->bus = gpu.pci_bus;
    pci->device = gpu.pci_device;
    pci->pciDeviceId = gpu.pci_device_id;
    pci->pciSubSystemId = gpu.pci_subsystem_id;
    return NVML_SUCCESS;
}

/* The layout v1 and v2 write (NVML before v3: a 16-byte bus id, then the ids and
 * four reserved words): a client built then (py3nvml) passes a struct this size. */
typedef struct {
    char busId[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    unsigned int reserved[4];
} legacy_pci_info_t;

static nvmlReturn_t legacy_pci(nvmlDevice_t device, void *out) {
    NEED(out);
    GPU_OR_RETURN(device, gpu);
    legacy_pci_info_t pci;
    memset(&pci, 0, sizeof pci);
    snprintf(pci.busId, sizeof pci.busId, "%.15s", gpu.bus_id + 4); /* "0000:18:00.0" */
    pci.domain = gpu.pci_domain;
    pci.bus = gpu.pci_bus;
    pci.device = gpu.pci_device;
    pci.pciDeviceId = gpu.pci_device_id;
    pci.pciSubSystemId = gpu.pci_subsystem_id;
    memcpy(out, &pci, sizeof pci);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    return legacy_pci(device, pci);
}

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    return legacy_pci(device, pci);
}

/* ------------------------------------------------------------------- memory */
EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    NEED(memory);
    GPU_OR_RETURN(device, gpu);
    memory->total = gpu.memory_total_bytes;
    memory->used = gpu.memory_used_bytes + gpu.memory_reserved_bytes; /* v1 counts the reservation */
    memory->free = memory->total - memory->used;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    NEED(memory);
    if (memory->version != nvmlMemory_v2)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    GPU_OR_RETURN(device, gpu);
    memory->total = gpu.memory_total_bytes;
    memory->reserved = gpu.memory_reserved_bytes;
    memory->used = gpu.memory_used_bytes;
    memory->free = gpu.memory_total_bytes - gpu.memory_reserved_bytes - gpu.memory_used_bytes;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetBAR1MemoryInfo(nvmlDevice_t device, nvmlBAR1Memory_t *bar1) {
    NEED(bar1);
    GPU_OR_RETURN(device, gpu);
    bar1->bar1Total = gpu.bar1_total_bytes;
    bar1->bar1Used = gpu.bar1_used_bytes;
    bar1->bar1Free = gpu.bar1_total_bytes - gpu.bar1_used_bytes;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetConfComputeMemSizeInfo(nvmlDevice_t device,
                                                       nvmlConfComputeMemSizeInfo_t *info) {
    NEED(info);
    GPU_OR_RETURN(device, gpu);
    (void)gpu;
    info->protectedMemSizeKib = 0;
    info->unprotectedMemSizeKib = 0;
    return NVML_SUCCESS;
}

/* -------------------------------------------------------------- utilization */
EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *rates) {
    NEED(rates);
    GPU_OR_RETURN(device, gpu);
    rates->gpu = gpu.utilization_gpu_pct;
    rates->memory = gpu.utilization_memory_pct;
    return NVML_SUCCESS;
}

#define CODEC_GETTER(function)                                                            \
    EXPORT nvmlReturn_t function(nvmlDevice_t device, unsigned int *use, unsigned int *period) { \
        NEED(use);                                                                        \
        NEED(period);                                                                     \
        GPU_OR_RETURN(device, gpu);                                                       \
        (void)gpu;                                                                        \
        *use = 0; /* no video work on a training node */                                  \
        *period = 100000;                                                                 \
        return NVML_SUCCESS;                                                              \
    }

CODEC_GETTER(nvmlDeviceGetEncoderUtilization)
CODEC_GETTER(nvmlDeviceGetDecoderUtilization)
CODEC_GETTER(nvmlDeviceGetJpgUtilization)
CODEC_GETTER(nvmlDeviceGetOfaUtilization)

/* The processes on one GPU: their records (``*found``, the caller's to free), and count. */
static nvmlReturn_t gpu_processes(nvmlDevice_t device, fakehw_process_t **found,
                                  unsigned int *count, fakehw_header_t *header) {
    GPU_OR_RETURN(device, gpu);
    fakehw_process_t *all;
    unsigned int total;
    nvmlReturn_t ok = read_processes(&all, &total, header);
    if (ok != NVML_SUCCESS)
        return ok;
    *count = 0;
    for (unsigned int i = 0; i < total; i++)
        if (all[i].gpu_index == gpu.index)
            all[(*count)++] = all[i]; /* in place: the GPU's own, in order */
    *found = all;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t device,
                                                   nvmlProcessUtilizationSample_t *samples,
                                                   unsigned int *count,
                                                   unsigned long long last_seen) {
    (void)last_seen;
    NEED(count);
    fakehw_process_t *found;
    fakehw_header_t header;
    unsigned int total;
    nvmlReturn_t ok = gpu_processes(device, &found, &total, &header);
    if (ok != NVML_SUCCESS)
        return ok;
    if (total == 0 || !samples || *count < total) {
        free(found);
        if (total == 0)
            return NVML_ERROR_NOT_FOUND; /* no samples since last_seen, as the driver says */
        *count = total;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    for (unsigned int i = 0; i < total; i++) {
        samples[i].pid = found[i].pid;
        samples[i].timeStamp = (unsigned long long)(header.time * 1e6);
        samples[i].smUtil = found[i].sm_util_pct;
        samples[i].memUtil = found[i].mem_util_pct;
        samples[i].encUtil = 0;
        samples[i].decUtil = 0;
    }
    free(found);
    *count = total;
    return NVML_SUCCESS;
}

/* --------------------------------------------------- temperature and power */
EXPORT nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, nvmlTemperatureSensors_t sensor,
                                            unsigned int *temperature) {
    NEED(temperature);
    if (sensor != NVML_TEMPERATURE_GPU)
        return NVML_ERROR_INVALID_ARGUMENT;
    GPU_OR_RETURN(device, gpu);
    *temperature = (unsigned int)gpu.temperature_gpu_c;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetTemperatureV(nvmlDevice_t device, nvmlTemperature_t *reading) {
    NEED(reading);
    if (reading->version != nvmlTemperature_v1)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if (reading->sensorType != NVML_TEMPERATURE_GPU)
        return NVML_ERROR_INVALID_ARGUMENT;
    GPU_OR_RETURN(device, gpu);
    reading->temperature = gpu.temperature_gpu_c;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetTemperatureThreshold(nvmlDevice_t device,
                                                     nvmlTemperatureThresholds_t kind,
                                                     unsigned int *temperature) {
    NEED(temperature);
    GPU_OR_RETURN(device, gpu);
    switch (kind) {
    case NVML_TEMPERATURE_THRESHOLD_SHUTDOWN: *temperature = gpu.temp_shutdown_c; break;
    case NVML_TEMPERATURE_THRESHOLD_SLOWDOWN: *temperature = gpu.temp_slowdown_c; break;
    case NVML_TEMPERATURE_THRESHOLD_MEM_MAX: *temperature = gpu.temp_memory_max_c; break;
    case NVML_TEMPERATURE_THRESHOLD_GPU_MAX: *temperature = gpu.temp_max_operating_c; break;
    case NVML_TEMPERATURE_THRESHOLD_ACOUSTIC_MIN:
    case NVML_TEMPERATURE_THRESHOLD_ACOUSTIC_CURR:
    case NVML_TEMPERATURE_THRESHOLD_ACOUSTIC_MAX:
    case NVML_TEMPERATURE_THRESHOLD_GPS_CURR:
        return NVML_ERROR_NOT_SUPPORTED; /* acoustic limits: passively cooled boards */
    default: return NVML_ERROR_INVALID_ARGUMENT;
    }
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMarginTemperature(nvmlDevice_t device,
                                                  nvmlMarginTemperature_t *margin) {
    NEED(margin);
    if (margin->version != nvmlMarginTemperature_v1)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    GPU_OR_RETURN(device, gpu);
    if (gpu.tlimit_base_c == 0)
        return NVML_ERROR_NOT_SUPPORTED; /* no T.Limit thresholds: an A100 */
    margin->marginTemperature = (int)gpu.tlimit_base_c - gpu.temperature_gpu_c;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementLimitConstraints(nvmlDevice_t device,
                                                                unsigned int *low,
                                                                unsigned int *high) {
    NEED(low);
    NEED(high);
    GPU_OR_RETURN(device, gpu);
    *low = gpu.power_min_mw;
    *high = gpu.power_max_mw;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device,
                                                       unsigned long long *energy) {
    NEED(energy);
    GPU_OR_RETURN(device, gpu);
    *energy = gpu.energy_mj;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t device,
                                                          unsigned long long *reasons) {
    NEED(reasons);
    GPU_OR_RETURN(device, gpu);
    *reasons = gpu.clocks_event_reasons;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t device,
                                                             unsigned long long *reasons) {
    return nvmlDeviceGetCurrentClocksEventReasons(device, reasons);
}

EXPORT nvmlReturn_t nvmlDeviceGetSupportedClocksEventReasons(nvmlDevice_t device,
                                                            unsigned long long *reasons) {
    NEED(reasons);
    GPU_OR_RETURN(device, gpu);
    (void)gpu;
    *reasons = 511;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetSupportedClocksThrottleReasons(nvmlDevice_t device,
                                                               unsigned long long *reasons) {
    return nvmlDeviceGetSupportedClocksEventReasons(device, reasons);
}

/* ------------------------------------------------------------------- clocks */
static int clock_of(const fakehw_gpu_t *gpu, nvmlClockType_t kind, int maximum, unsigned int *out) {
    switch (kind) {
    case NVML_CLOCK_GRAPHICS:
    case NVML_CLOCK_SM: *out = maximum ? gpu->clock_sm_max_mhz : gpu->clock_sm_mhz; return 1;
    case NVML_CLOCK_MEM:
        *out = maximum ? gpu->clock_memory_max_mhz : gpu->clock_memory_mhz;
        return 1;
    case NVML_CLOCK_VIDEO:
        *out = maximum ? gpu->clock_video_max_mhz : gpu->clock_video_mhz;
        return 1;
    default: return 0;
    }
}

#define CLOCK_GETTER(function, maximum)                                                      \
    EXPORT nvmlReturn_t function(nvmlDevice_t device, nvmlClockType_t kind, unsigned int *mhz) { \
        NEED(mhz);                                                                           \
        GPU_OR_RETURN(device, gpu);                                                          \
        return clock_of(&gpu, kind, maximum, mhz) ? NVML_SUCCESS : NVML_ERROR_INVALID_ARGUMENT; \
    }

CLOCK_GETTER(nvmlDeviceGetClockInfo, 0)
CLOCK_GETTER(nvmlDeviceGetMaxClockInfo, 1)
CLOCK_GETTER(nvmlDeviceGetApplicationsClock, 1)
CLOCK_GETTER(nvmlDeviceGetDefaultApplicationsClock, 1)
CLOCK_GETTER(nvmlDeviceGetMaxCustomerBoostClock, 1)

EXPORT nvmlReturn_t nvmlDeviceGetClock(nvmlDevice_t device, nvmlClockType_t kind,
                                      nvmlClockId_t clock_id, unsigned int *mhz) {
    NEED(mhz);
    if (clock_id >= NVML_CLOCK_ID_COUNT)
        return NVML_ERROR_INVALID_ARGUMENT;
    GPU_OR_RETURN(device, gpu);
    return clock_of(&gpu, kind, clock_id != NVML_CLOCK_ID_CURRENT, mhz)
               ? NVML_SUCCESS
               : NVML_ERROR_INVALID_ARGUMENT;
}

EXPORT nvmlReturn_t nvmlDeviceGetSupportedMemoryClocks(nvmlDevice_t device, unsigned int *count,
                                                      unsigned int *clocks) {
    NEED(count);
    GPU_OR_RETURN(device, gpu);
    if (!clocks || *count < 2) {
        *count = 2;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    clocks[0] = gpu.clock_memory_max_mhz;
    clocks[1] = gpu.clock_memory_min_mhz;
    *count = 2;
    return NVML_SUCCESS;
}

/* ---------------------------------------------------------- PCIe and NVLink */
EXPORT nvmlReturn_t nvmlDeviceGetPcieThroughput(nvmlDevice_t device, nvmlPcieUtilCounter_t counter,
                                               unsigned int *kbps) {
    NEED(kbps);
    GPU_OR_RETURN(device, gpu);
    if (counter == NVML_PCIE_UTIL_TX_BYTES)
        *kbps = gpu.pcie_tx_kbps;
    else if (counter == NVML_PCIE_UTIL_RX_BYTES)
        *kbps = gpu.pcie_rx_kbps;
    else
        return NVML_ERROR_INVALID_ARGUMENT;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkState(nvmlDevice_t device, unsigned int link,
                                            nvmlEnableState_t *active) {
    NEED(active);
    GPU_OR_RETURN(device, gpu);
    if (link >= gpu.nvlink_count)
        return NVML_ERROR_INVALID_ARGUMENT;
    *active = NVML_FEATURE_ENABLED;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkVersion(nvmlDevice_t device, unsigned int link,
                                              unsigned int *version) {
    NEED(version);
    GPU_OR_RETURN(device, gpu);
    if (link >= gpu.nvlink_count)
        return NVML_ERROR_INVALID_ARGUMENT;
    *version = gpu.architecture == NVML_DEVICE_ARCH_AMPERE ? 3 : gpu.architecture >= 10 ? 5 : 4;
    return NVML_SUCCESS;
}

/* What is at the far end of a link: on an NVSwitch baseboard one of its switch chips
 * (an HGX H100's four, which take a GPU's 18 links 5, 4, 4 and 5; an HGX A100's six,
 * 2 links each), on bridged PCIe cards the GPU's bridge partner. The switches' PCI
 * places (bus 05-0a) and ids (22a3, 1af1) are fakehw's choice, not read off a capture. */
static nvmlReturn_t nvlink_remote(nvmlDevice_t device, unsigned int link, int *is_switch,
                                  unsigned int *remote) {
    GPU_OR_RETURN(device, gpu);
    if (link >= gpu.nvlink_count)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (gpu.nvlink_topology == 2) {
        *is_switch = 0;
        *remote = gpu.index ^ 1u;
        return NVML_SUCCESS;
    }
    if (gpu.nvlink_topology != 1)
        return NVML_ERROR_NOT_SUPPORTED;
    static const unsigned int hopper_first_link[] = {0, 5, 9, 13, 18};
    *is_switch = 1;
    if (gpu.architecture == NVML_DEVICE_ARCH_AMPERE) {
        *remote = link / 2;
    } else {
        unsigned int chip = 0;
        while (link >= hopper_first_link[chip + 1])
            chip++;
        *remote = chip;
    }
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkRemoteDeviceType(nvmlDevice_t device, unsigned int link,
                                                       nvmlIntNvLinkDeviceType_t *type) {
    NEED(type);
    int is_switch;
    unsigned int remote;
    nvmlReturn_t ok = nvlink_remote(device, link, &is_switch, &remote);
    if (ok == NVML_SUCCESS)
        *type = is_switch ? NVML_NVLINK_DEVICE_TYPE_SWITCH : NVML_NVLINK_DEVICE_TYPE_GPU;
    return ok;
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkRemotePciInfo_v2(nvmlDevice_t device, unsigned int link,
                                                       nvmlPciInfo_t *pci) {
    NEED(pci);
    int is_switch;
    unsigned int remote;
    nvmlReturn_t ok = nvlink_remote(device, link, &is_switch, &remote);
    if (ok != NVML_SUCCESS)
        return ok;
    if (!is_switch)
        return nvmlDeviceGetPciInfo_v3(&devices[remote], pci);
    GPU_OR_RETURN(device, gpu);
    unsigned int device_id = gpu.architecture == NVML_DEVICE_ARCH_AMPERE ? 0x1af1u : 0x22a3u;
    memset(pci, 0, sizeof *pci);
    pci->domain = 0;
    pci->bus = 0x05 + remote;
    pci->device = 0;
    pci->pciDeviceId = device_id << 16 | 0x10deu;
    snprintf(pci->busId, sizeof pci->busId, "%08X:%02X:%02X.0", pci->domain, pci->bus, pci->device);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.0", pci->domain, pci->bus,
             pci->device);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkRemotePciInfo(nvmlDevice_t device, unsigned int link,
                                                    nvmlPciInfo_t *pci) {
    NEED(pci); /* the layout before v2, as nvmlDeviceGetPciInfo writes it */
    nvmlPciInfo_t full;
    nvmlReturn_t ok = nvmlDeviceGetNvLinkRemotePciInfo_v2(device, link, &full);
    if (ok != NVML_SUCCESS)
        return ok;
    legacy_pci_info_t legacy;
    memset(&legacy, 0, sizeof legacy);
    snprintf(legacy.busId, sizeof legacy.busId, "%s", full.busIdLegacy);
    legacy.domain = full.domain;
    legacy.bus = full.bus;
    legacy.device = full.device;
    legacy.pciDeviceId = full.pciDeviceId;
    legacy.pciSubSystemId = full.pciSubSystemId;
    memcpy(pci, &legacy, sizeof legacy);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t device, int count,
                                            nvmlFieldValue_t *values) {
    NEED(values);
    fakehw_header_t header;
    GPU_OR_RETURN(device, gpu);
    nvmlReturn_t ok = read_header(&header);
    if (ok != NVML_SUCCESS)
        return ok;
    unsigned int links = gpu.nvlink_count;
    for (int i = 0; i < count; i++) {
        nvmlFieldValue_t *field = &values[i];
        int all_links = field->scopeId == 0xFFFFFFFFu;
        field->timestamp = (long long)(header.time * 1e6);
        field->latencyUsec = 0;
        field->nvmlReturn = NVML_SUCCESS;
        field->valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
        switch (field->fieldId) {
        case NVML_FI_DEV_MEMORY_TEMP:
            field->value.uiVal = (unsigned int)gpu.temperature_memory_c;
            break;
        case NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION:
            field->valueType = NVML_VALUE_TYPE_UNSIGNED_LONG_LONG;
            field->value.ullVal = gpu.energy_mj;
            break;
        case NVML_FI_DEV_NVLINK_LINK_COUNT:
            field->value.uiVal = links;
            break;
        case NVML_FI_DEV_PCIE_REPLAY_COUNTER:
            field->valueType = NVML_VALUE_TYPE_UNSIGNED_LONG_LONG;
            field->value.ullVal = 0;
            break;
        case NVML_FI_DEV_POWER_AVERAGE:
        case NVML_FI_DEV_POWER_INSTANT:
            /* scopeId NVML_POWER_SCOPE_MEMORY: the memory's own power, not the GPU's; an
             * H100 board has no module power ([N/A], as nvidia-smi's module.power.*) */
            if (field->scopeId == NVML_POWER_SCOPE_MODULE) {
                field->nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
                break;
            }
            if (field->scopeId != NVML_POWER_SCOPE_GPU && field->scopeId != NVML_POWER_SCOPE_MEMORY) {
                field->nvmlReturn = NVML_ERROR_INVALID_ARGUMENT;
                break;
            }
            field->value.uiVal = field->scopeId == NVML_POWER_SCOPE_MEMORY ? gpu.memory_power_mw
                                 : field->fieldId == NVML_FI_DEV_POWER_AVERAGE ? gpu.power_draw_mw
                                                                               : gpu.power_instant_mw;
            break;
        case NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX:
        case NVML_FI_DEV_NVLINK_THROUGHPUT_RAW_TX:
        case NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX:
        case NVML_FI_DEV_NVLINK_THROUGHPUT_RAW_RX: {
            if (!links) {
                field->nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
                break;
            }
            if (!all_links && field->scopeId >= links) { /* scopeId: a link, or all of them */
                field->nvmlReturn = NVML_ERROR_INVALID_ARGUMENT;
                break;
            }
            int tx = field->fieldId == NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX ||
                     field->fieldId == NVML_FI_DEV_NVLINK_THROUGHPUT_RAW_TX;
            unsigned long long total = tx ? gpu.nvlink_tx_kib_total : gpu.nvlink_rx_kib_total;
            field->valueType = NVML_VALUE_TYPE_UNSIGNED_LONG_LONG;
            field->value.ullVal = all_links ? total : total / links;
            break;
        }
        default:
            field->nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
        }
    }
    return NVML_SUCCESS;
}

/* ---------------------------------------------------------------------- ECC */
EXPORT nvmlReturn_t nvmlDeviceGetEccMode(nvmlDevice_t device, nvmlEnableState_t *current,
                                        nvmlEnableState_t *pending) {
    NEED(current);
    NEED(pending);
    GPU_OR_RETURN(device, gpu);
    (void)gpu;
    *current = *pending = NVML_FEATURE_ENABLED;
    return NVML_SUCCESS;
}

static unsigned long long ecc_of(const fakehw_gpu_t *gpu, int uncorrected, int aggregate, int dram) {
    if (aggregate)
        return dram ? (uncorrected ? gpu->ecc_aggregate_dram_uncorrected : gpu->ecc_aggregate_dram_corrected)
                    : (uncorrected ? gpu->ecc_aggregate_sram_uncorrected : gpu->ecc_aggregate_sram_corrected);
    return dram ? (uncorrected ? gpu->ecc_volatile_dram_uncorrected : gpu->ecc_volatile_dram_corrected)
                : (uncorrected ? gpu->ecc_volatile_sram_uncorrected : gpu->ecc_volatile_sram_corrected);
}

EXPORT nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t device, nvmlMemoryErrorType_t error,
                                               nvmlEccCounterType_t counter,
                                               unsigned long long *count) {
    NEED(count);
    if (error >= NVML_MEMORY_ERROR_TYPE_COUNT || counter >= NVML_ECC_COUNTER_TYPE_COUNT)
        return NVML_ERROR_INVALID_ARGUMENT;
    GPU_OR_RETURN(device, gpu);
    int uncorrected = error != NVML_MEMORY_ERROR_TYPE_CORRECTED;
    int aggregate = counter != NVML_VOLATILE_ECC;
    *count = ecc_of(&gpu, uncorrected, aggregate, 1) + ecc_of(&gpu, uncorrected, aggregate, 0);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryErrorCounter(nvmlDevice_t device,
                                                   nvmlMemoryErrorType_t error,
                                                   nvmlEccCounterType_t counter,
                                                   nvmlMemoryLocation_t location,
                                                   unsigned long long *count) {
    NEED(count);
    if (error >= NVML_MEMORY_ERROR_TYPE_COUNT || counter >= NVML_ECC_COUNTER_TYPE_COUNT ||
        location >= NVML_MEMORY_LOCATION_COUNT)
        return NVML_ERROR_INVALID_ARGUMENT;
    GPU_OR_RETURN(device, gpu);
    int dram = location == NVML_MEMORY_LOCATION_DEVICE_MEMORY || location == NVML_MEMORY_LOCATION_DRAM;
    if (!dram && location != NVML_MEMORY_LOCATION_SRAM)
        return NVML_ERROR_NOT_SUPPORTED; /* L1, L2, register file, texture: [N/A] on an H100 */
    *count = ecc_of(&gpu, error != NVML_MEMORY_ERROR_TYPE_CORRECTED, counter != NVML_VOLATILE_ECC, dram);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetRemappedRows(nvmlDevice_t device, unsigned int *corrected,
                                             unsigned int *uncorrected, unsigned int *pending,
                                             unsigned int *failure) {
    NEED(corrected);
    NEED(uncorrected);
    NEED(pending);
    NEED(failure);
    GPU_OR_RETURN(device, gpu);
    /* as fakehw.contract.snapshot.RemappedRows: a row per uncorrectable error, pending until
       the next reset */
    *corrected = 0;
    *uncorrected = (unsigned int)gpu.ecc_aggregate_dram_uncorrected;
    *pending = gpu.ecc_volatile_dram_uncorrected > 0;
    *failure = 0;
    return NVML_SUCCESS;
}

/* -------------------------------------------------------------------- modes */
EXPORT nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *current,
                                        unsigned int *pending) {
    NEED(current);
    NEED(pending);
    GPU_OR_RETURN(device, gpu);
    (void)gpu;
    *current = *pending = NVML_DEVICE_MIG_DISABLE;
    return NVML_SUCCESS;
}

/* What a real H100 refuses: the same code, after checking the handle. */
#define REFUSED(function, code, ...)                        \
    EXPORT nvmlReturn_t function(nvmlDevice_t device, __VA_ARGS__) { \
        GPU_OR_RETURN(device, gpu);                         \
        (void)gpu;                                          \
        return code;                                        \
    }

REFUSED(nvmlDeviceGetFanSpeed, NVML_ERROR_NOT_SUPPORTED, unsigned int *speed)
REFUSED(nvmlDeviceGetFanSpeed_v2, NVML_ERROR_NOT_SUPPORTED, unsigned int fan, unsigned int *speed)
REFUSED(nvmlDeviceGetDriverModel, NVML_ERROR_NOT_SUPPORTED, nvmlDriverModel_t *current,
        nvmlDriverModel_t *pending)
REFUSED(nvmlDeviceGetDriverModel_v2, NVML_ERROR_NOT_SUPPORTED, nvmlDriverModel_t *current,
        nvmlDriverModel_t *pending)
REFUSED(nvmlDeviceGetCurrentDriverModel, NVML_ERROR_NOT_SUPPORTED, nvmlDriverModel_t *current)
REFUSED(nvmlDeviceGetPendingDriverModel, NVML_ERROR_NOT_SUPPORTED, nvmlDriverModel_t *pending)
REFUSED(nvmlDeviceGetGpuOperationMode, NVML_ERROR_NOT_SUPPORTED, nvmlGpuOperationMode_t *current,
        nvmlGpuOperationMode_t *pending)
REFUSED(nvmlDeviceGetRetiredPages, NVML_ERROR_NOT_SUPPORTED, nvmlPageRetirementCause_t cause,
        unsigned int *count, unsigned long long *addresses)
REFUSED(nvmlDeviceGetRetiredPages_v2, NVML_ERROR_NOT_SUPPORTED, nvmlPageRetirementCause_t cause,
        unsigned int *count, unsigned long long *addresses, unsigned long long *timestamps)
REFUSED(nvmlDeviceGetRetiredPagesPendingStatus, NVML_ERROR_NOT_SUPPORTED,
        nvmlEnableState_t *pending)
REFUSED(nvmlDeviceGetNumaNodeId, NVML_ERROR_NOT_SUPPORTED, unsigned int *node)
REFUSED(nvmlDeviceGetAutoBoostedClocksEnabled, NVML_ERROR_NOT_SUPPORTED,
        nvmlEnableState_t *enabled, nvmlEnableState_t *default_enabled)
REFUSED(nvmlDeviceGetAttributes, NVML_ERROR_NOT_SUPPORTED, nvmlDeviceAttributes_t *attributes)
REFUSED(nvmlDeviceGetAttributes_v2, NVML_ERROR_NOT_SUPPORTED, nvmlDeviceAttributes_t *attributes)
/* not a MIG device, MIG disabled */
REFUSED(nvmlDeviceGetGpuInstanceId, NVML_ERROR_INVALID_ARGUMENT, unsigned int *id)
REFUSED(nvmlDeviceGetComputeInstanceId, NVML_ERROR_INVALID_ARGUMENT, unsigned int *id)
REFUSED(nvmlDeviceGetDeviceHandleFromMigDeviceHandle, NVML_ERROR_INVALID_ARGUMENT,
        nvmlDevice_t *parent)
REFUSED(nvmlDeviceGetMigDeviceHandleByIndex, NVML_ERROR_INVALID_ARGUMENT, unsigned int index,
        nvmlDevice_t *mig)

/* ---------------------------------------------------------------- processes */
/* v1 (pid, usedGpuMemory) and v2/v3 (and the instance ids): the same records. */
static nvmlReturn_t process_list(nvmlDevice_t device, unsigned int *count, void *infos,
                                 size_t stride, int compute) {
    NEED(count);
    fakehw_process_t *found;
    fakehw_header_t header;
    unsigned int total = 0;
    nvmlReturn_t ok = gpu_processes(device, &found, &total, &header);
    if (ok != NVML_SUCCESS)
        return ok;
    if (!compute)
        total = 0; /* graphics and MPS: none on a training node */
    if (total == 0 || !infos || *count < total) {
        free(found);
        *count = total;
        return total == 0 ? NVML_SUCCESS : NVML_ERROR_INSUFFICIENT_SIZE;
    }
    for (unsigned int i = 0; i < total; i++) {
        nvmlProcessInfo_t *info = (nvmlProcessInfo_t *)((char *)infos + i * stride);
        info->pid = found[i].pid;
        info->usedGpuMemory = found[i].used_memory_bytes;
        if (stride >= sizeof(nvmlProcessInfo_t)) {
            info->gpuInstanceId = 0xFFFFFFFFu;
            info->computeInstanceId = 0xFFFFFFFFu;
        }
    }
    free(found);
    *count = total;
    return NVML_SUCCESS;
}

#define PROCESS_GETTERS(prefix, compute)                                                       \
    EXPORT nvmlReturn_t prefix(nvmlDevice_t device, unsigned int *count, nvmlProcessInfo_v1_t *infos) { \
        return process_list(device, count, infos, sizeof(nvmlProcessInfo_v1_t), compute);      \
    }                                                                                          \
    EXPORT nvmlReturn_t prefix##_v2(nvmlDevice_t device, unsigned int *count, nvmlProcessInfo_v2_t *infos) { \
        return process_list(device, count, infos, sizeof(nvmlProcessInfo_v2_t), compute);      \
    }                                                                                          \
    EXPORT nvmlReturn_t prefix##_v3(nvmlDevice_t device, unsigned int *count, nvmlProcessInfo_t *infos) { \
        return process_list(device, count, infos, sizeof(nvmlProcessInfo_t), compute);         \
    }

PROCESS_GETTERS(nvmlDeviceGetComputeRunningProcesses, 1)
PROCESS_GETTERS(nvmlDeviceGetGraphicsRunningProcesses, 0)
PROCESS_GETTERS(nvmlDeviceGetMPSComputeRunningProcesses, 0)

EXPORT nvmlReturn_t nvmlDeviceGetRunningProcessDetailList(nvmlDevice_t device,
                                                         nvmlProcessDetailList_t *list) {
    NEED(list);
    if (list->version != nvmlProcessDetailList_v1)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    fakehw_process_t *found;
    fakehw_header_t header;
    unsigned int total = 0;
    nvmlReturn_t ok = gpu_processes(device, &found, &total, &header);
    if (ok != NVML_SUCCESS)
        return ok;
    if (list->mode != 0) /* compute (graphics and MPS: none here) */
        total = 0;
    if (total == 0 || !list->procArray || list->numProcArrayEntries < total) {
        free(found);
        list->numProcArrayEntries = total;
        return total == 0 ? NVML_SUCCESS : NVML_ERROR_INSUFFICIENT_SIZE;
    }
    for (unsigned int i = 0; i < total; i++) {
        list->procArray[i].pid = found[i].pid;
        list->procArray[i].usedGpuMemory = found[i].used_memory_bytes;
        list->procArray[i].gpuInstanceId = 0xFFFFFFFFu;
        list->procArray[i].computeInstanceId = 0xFFFFFFFFu;
        list->procArray[i].usedGpuCcProtectedMemory = 0;
    }
    free(found);
    list->numProcArrayEntries = total;
    return NVML_SUCCESS;
}

/* ------------------------------------ asked for by real clients, not answered before */
EXPORT nvmlReturn_t nvmlDeviceGetC2cModeInfoV(nvmlDevice_t device, nvmlC2cModeInfo_v1_t *info) {
    NEED(info);
    GPU_OR_RETURN(device, gpu);
    (void)gpu;
    info->isC2cEnabled = 0; /* a real H100 SXM: no chip-to-chip link to a Grace CPU */
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetInforomVersion(nvmlDevice_t device, nvmlInforomObject_t object,
                                               char *version, unsigned int length) {
    GPU_OR_RETURN(device, gpu);
    switch (object) {
    case NVML_INFOROM_OEM: return write_string(version, length, gpu.inforom_oem);
    case NVML_INFOROM_ECC: return write_string(version, length, gpu.inforom_ecc);
    case NVML_INFOROM_POWER: return NVML_ERROR_NOT_SUPPORTED;
    default: return NVML_ERROR_INVALID_ARGUMENT;
    }
}

EXPORT nvmlReturn_t nvmlDeviceGetSupportedGraphicsClocks(nvmlDevice_t device,
                                                        unsigned int memory_mhz,
                                                        unsigned int *count,
                                                        unsigned int *clocks) {
    NEED(count);
    GPU_OR_RETURN(device, gpu);
    if (memory_mhz != gpu.clock_memory_max_mhz && memory_mhz != gpu.clock_memory_min_mhz)
        return NVML_ERROR_NOT_FOUND;
    unsigned int step = gpu.clock_step_mhz ? gpu.clock_step_mhz : 15;
    unsigned int low = gpu.clock_sm_idle_mhz, high = gpu.clock_sm_max_mhz;
    unsigned int total = high >= low ? (high - low) / step + 1 : 0;
    if (!clocks || *count < total) {
        *count = total;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    for (unsigned int i = 0; i < total; i++)
        clocks[i] = high - i * step; /* highest first, as the driver lists them */
    *count = total;
    return NVML_SUCCESS;
}

/* -------------------------------------------------------------- accounting */
/* A real H100 out of the box: accounting off, a 4000-entry buffer, no PIDs kept. */
ENUM_GETTER(nvmlDeviceGetAccountingMode, nvmlEnableState_t, NVML_FEATURE_DISABLED)
UINT_GETTER(nvmlDeviceGetAccountingBufferSize, 4000)

EXPORT nvmlReturn_t nvmlDeviceGetAccountingPids(nvmlDevice_t device, unsigned int *count,
                                               unsigned int *pids) {
    NEED(count);
    GPU_OR_RETURN(device, gpu);
    (void)gpu;
    (void)pids;
    *count = 0;
    return NVML_SUCCESS;
}

/* ----------------------------------------------------------------- topology */
/* The PCIe path between two GPUs: on a DGX each GPU has a switch of its own under
 * the CPU socket of its NUMA node, so two GPUs meet at that node or across the
 * system (what `nvidia-smi topo -m` calls NODE and SYS). */
EXPORT nvmlReturn_t nvmlDeviceGetTopologyCommonAncestor(nvmlDevice_t first, nvmlDevice_t second,
                                                       nvmlGpuTopologyLevel_t *level) {
    NEED(level);
    GPU_OR_RETURN(first, one);
    GPU_OR_RETURN(second, other);
    if (one.index == other.index)
        *level = NVML_TOPOLOGY_INTERNAL;
    else
        *level = one.numa_node == other.numa_node ? NVML_TOPOLOGY_NODE : NVML_TOPOLOGY_SYSTEM;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetP2PStatus(nvmlDevice_t first, nvmlDevice_t second,
                                          nvmlGpuP2PCapsIndex_t index, nvmlGpuP2PStatus_t *status) {
    NEED(status);
    GPU_OR_RETURN(first, one);
    GPU_OR_RETURN(second, other);
    int linked = one.nvlink_topology == 1 ||
                 (one.nvlink_topology == 2 && (one.index ^ 1u) == other.index);
    if (one.index == other.index)
        *status = NVML_P2P_STATUS_NOT_SUPPORTED;
    else if (index == NVML_P2P_CAPS_INDEX_NVLINK)
        *status = linked ? NVML_P2P_STATUS_OK : NVML_P2P_STATUS_NOT_SUPPORTED;
    else if (index == NVML_P2P_CAPS_INDEX_READ || index == NVML_P2P_CAPS_INDEX_WRITE ||
             index == NVML_P2P_CAPS_INDEX_ATOMICS || index == NVML_P2P_CAPS_INDEX_PROP)
        *status = NVML_P2P_STATUS_OK; /* over NVLink, or PCIe peer-to-peer */
    else
        *status = NVML_P2P_STATUS_NOT_SUPPORTED;
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------ samples */
/* The driver keeps a buffer of recent samples; here, the current reading: one sample
 * at the snapshot's time, none if the caller has seen it already. */
EXPORT nvmlReturn_t nvmlDeviceGetSamples(nvmlDevice_t device, nvmlSamplingType_t type,
                                        unsigned long long last_seen, nvmlValueType_t *value_type,
                                        unsigned int *count, nvmlSample_t *samples) {
    NEED(value_type);
    NEED(count);
    fakehw_header_t header;
    GPU_OR_RETURN(device, gpu);
    nvmlReturn_t ok = read_header(&header);
    if (ok != NVML_SUCCESS)
        return ok;
    unsigned long long stamp = (unsigned long long)(header.time * 1e6);
    unsigned int value;
    switch (type) {
    case NVML_TOTAL_POWER_SAMPLES: value = gpu.power_instant_mw; break;
    case NVML_GPU_UTILIZATION_SAMPLES: value = gpu.utilization_gpu_pct; break;
    case NVML_MEMORY_UTILIZATION_SAMPLES: value = gpu.utilization_memory_pct; break;
    case NVML_ENC_UTILIZATION_SAMPLES:
    case NVML_DEC_UTILIZATION_SAMPLES:
    case NVML_JPG_UTILIZATION_SAMPLES:
    case NVML_OFA_UTILIZATION_SAMPLES: value = 0; break;
    case NVML_PROCESSOR_CLK_SAMPLES: value = gpu.clock_sm_mhz; break;
    case NVML_MEMORY_CLK_SAMPLES: value = gpu.clock_memory_mhz; break;
    default: return NVML_ERROR_NOT_SUPPORTED;
    }
    *value_type = NVML_VALUE_TYPE_UNSIGNED_INT;
    if (!samples) {
        *count = 1;
        return NVML_SUCCESS;
    }
    if (*count == 0)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (last_seen >= stamp)
        return NVML_ERROR_NOT_FOUND;
    samples[0].timeStamp = stamp;
    samples[0].sampleValue.uiVal = value;
    *count = 1;
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------- events */
/* What `fakehw inject` raises reaches a waiting caller: an XID (the device plugin's
 * health check waits for nvmlEventTypeXidCriticalError), an uncorrectable or a
 * corrected ECC error. The set remembers each registered GPU's counts and reports
 * what grew since. */
#define EVENT_TYPES_SUPPORTED 65439ULL /* a real H100's nvmlDeviceGetSupportedEventTypes */

struct nvmlEventSet_st {
    pthread_mutex_t lock;
    unsigned long long types[MAX_DEVICES];
    unsigned long long xids[MAX_DEVICES], double_bit[MAX_DEVICES], single_bit[MAX_DEVICES];
};

EXPORT nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t device,
                                                    unsigned long long *types) {
    NEED(types);
    GPU_OR_RETURN(device, gpu);
    (void)gpu;
    *types = EVENT_TYPES_SUPPORTED;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set) {
    NEED(set);
    if (__atomic_load_n(&refcount, __ATOMIC_RELAXED) <= 0)
        return NVML_ERROR_UNINITIALIZED;
    struct nvmlEventSet_st *created = calloc(1, sizeof *created);
    if (!created)
        return NVML_ERROR_MEMORY;
    pthread_mutex_init(&created->lock, NULL);
    *set = created;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) {
    NEED(set);
    pthread_mutex_destroy(&set->lock);
    free(set);
    return NVML_SUCCESS;
}

static unsigned long long double_bit_of(const fakehw_gpu_t *gpu) {
    return gpu->ecc_volatile_dram_uncorrected + gpu->ecc_volatile_sram_uncorrected;
}

static unsigned long long single_bit_of(const fakehw_gpu_t *gpu) {
    return gpu->ecc_volatile_dram_corrected + gpu->ecc_volatile_sram_corrected;
}

EXPORT nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t device, unsigned long long types,
                                            nvmlEventSet_t set) {
    NEED(set);
    GPU_OR_RETURN(device, gpu);
    if (types & ~EVENT_TYPES_SUPPORTED)
        return NVML_ERROR_NOT_SUPPORTED;
    pthread_mutex_lock(&set->lock);
    unsigned int i = device->index;
    if (!set->types[i]) {
        set->xids[i] = gpu.xid_count;
        set->double_bit[i] = double_bit_of(&gpu);
        set->single_bit[i] = single_bit_of(&gpu);
    }
    set->types[i] |= types;
    pthread_mutex_unlock(&set->lock);
    return NVML_SUCCESS;
}

/* One pending event of the set, if any (the caller holds the set's lock). */
static nvmlReturn_t next_event(nvmlEventSet_t set, nvmlEventData_t *data) {
    for (unsigned int i = 0; i < MAX_DEVICES; i++) {
        if (!set->types[i])
            continue;
        fakehw_gpu_t gpu;
        fakehw_header_t header;
        nvmlReturn_t ok = copy_snapshot(&header, gpu_offset(i), &gpu, sizeof gpu);
        if (ok != NVML_SUCCESS)
            return ok;
        unsigned long long type = 0, value = 0;
        if ((set->types[i] & nvmlEventTypeXidCriticalError) && gpu.xid_count > set->xids[i]) {
            set->xids[i]++;
            type = nvmlEventTypeXidCriticalError;
            value = gpu.last_xid ? gpu.last_xid : 999;
        } else if ((set->types[i] & nvmlEventTypeDoubleBitEccError) &&
                   double_bit_of(&gpu) > set->double_bit[i]) {
            set->double_bit[i] = double_bit_of(&gpu);
            type = nvmlEventTypeDoubleBitEccError;
        } else if ((set->types[i] & nvmlEventTypeSingleBitEccError) &&
                   single_bit_of(&gpu) > set->single_bit[i]) {
            set->single_bit[i] = single_bit_of(&gpu);
            type = nvmlEventTypeSingleBitEccError;
        }
        if (type) {
            data->device = &devices[i];
            data->eventType = type;
            data->eventData = value;
            data->gpuInstanceId = 0xFFFFFFFFu;
            data->computeInstanceId = 0xFFFFFFFFu;
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_TIMEOUT;
}

EXPORT nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data,
                                       unsigned int timeout_ms) {
    NEED(set);
    NEED(data);
    long long deadline = now_ns() + (long long)timeout_ms * 1000000LL;
    for (;;) {
        pthread_mutex_lock(&set->lock);
        nvmlReturn_t found = next_event(set, data);
        pthread_mutex_unlock(&set->lock);
        if (found != NVML_ERROR_TIMEOUT || now_ns() >= deadline)
            return found;
        struct timespec pause = {.tv_nsec = 20000000L}; /* the model ticks every 100 ms */
        nanosleep(&pause, NULL);
    }
}

EXPORT nvmlReturn_t nvmlEventSetWait(nvmlEventSet_t set, nvmlEventData_t *data,
                                    unsigned int timeout_ms) {
    return nvmlEventSetWait_v2(set, data, timeout_ms);
}

/* ------------------------------------------- more of what a real H100 answers */
/* (tests/real/h100/static/pynvml.txt) */
ENUM_GETTER(nvmlDeviceGetBusType, nvmlBusType_t, NVML_BUS_TYPE_PCIE)
UINT_GETTER(nvmlDeviceGetPcieLinkMaxSpeed, gpu.pcie_gen_max >= 5 ? NVML_PCIE_LINK_MAX_SPEED_32000MBPS
                                                                  : NVML_PCIE_LINK_MAX_SPEED_16000MBPS)
UINT_GETTER(nvmlDeviceGetInforomConfigurationChecksum, 0)

EXPORT nvmlReturn_t nvmlDeviceGetGspFirmwareMode(nvmlDevice_t device, unsigned int *enabled,
                                                unsigned int *default_mode) {
    NEED(enabled);
    NEED(default_mode);
    GPU_OR_RETURN(device, gpu);
    (void)gpu;
    *enabled = *default_mode = 1;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetGspFirmwareVersion(nvmlDevice_t device, char *version) {
    NEED(version);
    fakehw_header_t header;
    GPU_OR_RETURN(device, gpu);
    (void)gpu;
    nvmlReturn_t ok = read_header(&header);
    if (ok == NVML_SUCCESS)
        snprintf(version, NVML_GSP_FIRMWARE_VERSION_BUF_SIZE, "%s", header.driver_version);
    return ok;
}

EXPORT nvmlReturn_t nvmlDeviceGetSupportedPerformanceStates(nvmlDevice_t device,
                                                           nvmlPstates_t *states,
                                                           unsigned int size) {
    NEED(states);
    GPU_OR_RETURN(device, gpu);
    (void)gpu;
    if (size < 2 * sizeof *states)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    for (unsigned int i = 0; i < size / sizeof *states; i++)
        states[i] = NVML_PSTATE_UNKNOWN;
    states[0] = NVML_PSTATE_2; /* as a real H100 lists them: P2, then P0 */
    states[1] = NVML_PSTATE_0;
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------ setters */
/* A setter's request to the daemon: ``op`` on this GPU (by its global index), with
 * ``arguments`` (",\"key\":value..." or ""), answered within SETTER_TIMEOUT_S. */
static nvmlReturn_t ask_for(const fakehw_gpu_t *gpu, const char *op, const char *arguments) {
    fakehw_header_t header;
    nvmlReturn_t ok = read_header(&header);
    if (ok != NVML_SUCCESS)
        return ok;
    char request[256], reply[1024];
    unsigned int global = header.node_index * header.gpu_count + gpu->index;
    snprintf(request, sizeof request, "{\"id\":1,\"op\":\"%s\",\"gpu\":%u%s}\n", op, global,
             arguments);
    return daemon_exchange(request, reply, sizeof reply, SETTER_TIMEOUT_S);
}

/* As the driver: root only (NVML_ERROR_NO_PERMISSION otherwise), within the board's
 * range; the daemon's model then caps the GPU there, and every view shows it. */
EXPORT nvmlReturn_t nvmlDeviceSetPowerManagementLimit(nvmlDevice_t device, unsigned int limit) {
    GPU_OR_RETURN(device, gpu);
    if (geteuid() != 0)
        return NVML_ERROR_NO_PERMISSION;
    if (limit < gpu.power_min_mw || limit > gpu.power_max_mw)
        return NVML_ERROR_INVALID_ARGUMENT;
    char arguments[64];
    snprintf(arguments, sizeof arguments, ",\"limit_mw\":%u", limit);
    return ask_for(&gpu, "set_power_limit", arguments);
}

EXPORT nvmlReturn_t nvmlDeviceSetPowerManagementLimit_v2(nvmlDevice_t device,
                                                        nvmlPowerValue_v2_t *value) {
    NEED(value);
    if (value->version != nvmlPowerValue_v2)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if (value->powerScope != NVML_POWER_SCOPE_GPU)
        return NVML_ERROR_NOT_SUPPORTED; /* an H100 board has no module or memory limit */
    return nvmlDeviceSetPowerManagementLimit(device, value->powerValueMw);
}

/* nvidia-smi -lgc MIN,MAX: the SM clock held within the range (here: at most MAX, which
 * must be one of the supported graphics clocks' range), -rgc to reset. */
static nvmlReturn_t lock_clocks(nvmlDevice_t device, int lock, unsigned int min_mhz,
                                unsigned int max_mhz) {
    GPU_OR_RETURN(device, gpu);
    if (geteuid() != 0)
        return NVML_ERROR_NO_PERMISSION;
    if (lock && (min_mhz > max_mhz || max_mhz < gpu.clock_sm_idle_mhz || max_mhz > gpu.clock_sm_max_mhz))
        return NVML_ERROR_INVALID_ARGUMENT;
    char arguments[64] = "";
    if (lock)
        snprintf(arguments, sizeof arguments, ",\"max_mhz\":%u", max_mhz);
    return ask_for(&gpu, "lock_clocks", arguments);
}

EXPORT nvmlReturn_t nvmlDeviceSetGpuLockedClocks(nvmlDevice_t device, unsigned int min_mhz,
                                                unsigned int max_mhz) {
    return lock_clocks(device, 1, min_mhz, max_mhz);
}

EXPORT nvmlReturn_t nvmlDeviceResetGpuLockedClocks(nvmlDevice_t device) {
    return lock_clocks(device, 0, 0, 0);
}

/* nvidia-smi -lmc: the memory clock held at the highest supported memory clock within
 * [min, max] (an H100's are 2619 and 1593 MHz), -rmc to reset. */
static nvmlReturn_t lock_memory_clocks(nvmlDevice_t device, int lock, unsigned int min_mhz,
                                       unsigned int max_mhz) {
    GPU_OR_RETURN(device, gpu);
    if (geteuid() != 0)
        return NVML_ERROR_NO_PERMISSION;
    unsigned int clock = gpu.clock_memory_max_mhz;
    if (lock) {
        if (min_mhz > max_mhz || max_mhz < gpu.clock_memory_min_mhz)
            return NVML_ERROR_INVALID_ARGUMENT;
        if (max_mhz < gpu.clock_memory_max_mhz)
            clock = gpu.clock_memory_min_mhz;
        if (clock < min_mhz)
            return NVML_ERROR_INVALID_ARGUMENT; /* no supported clock in the range */
    }
    char arguments[64] = ",\"clock\":\"memory\"";
    if (lock)
        snprintf(arguments, sizeof arguments, ",\"clock\":\"memory\",\"max_mhz\":%u", clock);
    return ask_for(&gpu, "lock_clocks", arguments);
}

EXPORT nvmlReturn_t nvmlDeviceSetMemoryLockedClocks(nvmlDevice_t device, unsigned int min_mhz,
                                                   unsigned int max_mhz) {
    return lock_memory_clocks(device, 1, min_mhz, max_mhz);
}

EXPORT nvmlReturn_t nvmlDeviceResetMemoryLockedClocks(nvmlDevice_t device) {
    return lock_memory_clocks(device, 0, 0, 0);
}

/* nvidia-smi -pm 0|1. */
EXPORT nvmlReturn_t nvmlDeviceSetPersistenceMode(nvmlDevice_t device, nvmlEnableState_t mode) {
    GPU_OR_RETURN(device, gpu);
    if (mode != NVML_FEATURE_ENABLED && mode != NVML_FEATURE_DISABLED)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (geteuid() != 0)
        return NVML_ERROR_NO_PERMISSION;
    return ask_for(&gpu, "set_persistence_mode",
                   mode == NVML_FEATURE_ENABLED ? ",\"enabled\":true" : ",\"enabled\":false");
}
