#include "cmpi.h"
#include <mpi.h>
#include <sched.h>

#define MAX_COMMS 256
static MPI_Comm comms[MAX_COMMS];
static int comm_count = 0;

static MPI_Comm get(int handle) {
    if (handle == 0) return MPI_COMM_WORLD;
    if (handle < 0 || handle >= comm_count) return MPI_COMM_NULL;
    return comms[handle];
}

static MPI_Datatype type_of(int dtype) {
    switch (dtype) {
    case CMPI_FLOAT: return MPI_FLOAT;
    case CMPI_DOUBLE: return MPI_DOUBLE;
    case CMPI_INT32: return MPI_INT32_T;
    case CMPI_INT64: return MPI_INT64_T;
    default: return MPI_BYTE;
    }
}

static MPI_Op op_of(int op) { return op == CMPI_MAX ? MPI_MAX : op == CMPI_MIN ? MPI_MIN : MPI_SUM; }

int cmpi_init(int *provided) {
    int flag = 0;
    MPI_Initialized(&flag);
    if (!flag) {
        int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, provided);
        if (rc != MPI_SUCCESS) return rc;
    } else {
        MPI_Query_thread(provided);
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    if (comm_count == 0) { comms[0] = MPI_COMM_WORLD; comm_count = 1; }
    return MPI_SUCCESS;
}

int cmpi_finalize(void) {
    int flag = 0;
    MPI_Finalized(&flag);
    return flag ? MPI_SUCCESS : MPI_Finalize();
}

int cmpi_initialized(void) { int flag = 0; MPI_Initialized(&flag); return flag; }
int cmpi_rank(int comm, int *rank) { return MPI_Comm_rank(get(comm), rank); }
int cmpi_size(int comm, int *size) { return MPI_Comm_size(get(comm), size); }
double cmpi_wtime(void) { return MPI_Wtime(); }

/* Completes a request by polling; gives up after `timeout` seconds (if positive). */
static int wait_for(MPI_Request *req, double timeout) {
    double start = MPI_Wtime();
    long spins = 0;
    for (;;) {
        int done = 0;
        int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return rc;
        if (done) return MPI_SUCCESS;
        if (++spins % 1024 == 0) {
            if (timeout > 0 && MPI_Wtime() - start > timeout) return CMPI_TIMEOUT;
            sched_yield();
        }
    }
}

/* Completes `n` requests by polling; gives up after `timeout` seconds (if positive). */
static int wait_all(int n, MPI_Request *reqs, double timeout) {
    double start = MPI_Wtime();
    long spins = 0;
    for (;;) {
        int done = 0;
        int rc = MPI_Testall(n, reqs, &done, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS) return rc;
        if (done) return MPI_SUCCESS;
        if (++spins % 1024 == 0) {
            if (timeout > 0 && MPI_Wtime() - start > timeout) return CMPI_TIMEOUT;
            sched_yield();
        }
    }
}

int cmpi_exchange(int comm, int nsend, const int *dests, const void *const *sends, const int *send_counts,
                  int nrecv, const int *sources, void *const *recvs, const int *recv_counts, int dtype, double timeout) {
    enum { MAX_MESSAGES = 64 };
    if (nsend < 0 || nrecv < 0 || nsend + nrecv > MAX_MESSAGES) return MPI_ERR_COUNT;
    MPI_Request reqs[MAX_MESSAGES];
    MPI_Datatype t = type_of(dtype);
    int n = 0;
    for (int i = 0; i < nrecv; i++) {
        int rc = MPI_Irecv(recvs[i], recv_counts[i], t, sources[i], 77, get(comm), &reqs[n]);
        if (rc != MPI_SUCCESS) return rc;
        n++;
    }
    for (int i = 0; i < nsend; i++) {
        int rc = MPI_Isend(sends[i], send_counts[i], t, dests[i], 77, get(comm), &reqs[n]);
        if (rc != MPI_SUCCESS) return rc;
        n++;
    }
    return wait_all(n, reqs, timeout);
}

int cmpi_allreduce(int comm, void *buffer, int count, int dtype, int op, double timeout) {
    MPI_Request req;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, buffer, count, type_of(dtype), op_of(op), get(comm), &req);
    return rc != MPI_SUCCESS ? rc : wait_for(&req, timeout);
}

int cmpi_allgather(int comm, const void *send, int count, void *recv, int dtype, double timeout) {
    MPI_Request req;
    MPI_Datatype t = type_of(dtype);
    int rc = MPI_Iallgather(send, count, t, recv, count, t, get(comm), &req);
    return rc != MPI_SUCCESS ? rc : wait_for(&req, timeout);
}

int cmpi_allgatherv(int comm, const void *send, int count, void *recv, const int *counts, const int *displs,
                    int dtype, double timeout) {
    MPI_Request req;
    MPI_Datatype t = type_of(dtype);
    int rc = MPI_Iallgatherv(send, count, t, recv, counts, displs, t, get(comm), &req);
    return rc != MPI_SUCCESS ? rc : wait_for(&req, timeout);
}

int cmpi_reduce_scatter(int comm, const void *send, void *recv, const int *counts, int dtype, int op, double timeout) {
    MPI_Request req;
    int rc = MPI_Ireduce_scatter(send, recv, counts, type_of(dtype), op_of(op), get(comm), &req);
    return rc != MPI_SUCCESS ? rc : wait_for(&req, timeout);
}

int cmpi_bcast(int comm, void *buffer, int count, int dtype, int root, double timeout) {
    MPI_Request req;
    int rc = MPI_Ibcast(buffer, count, type_of(dtype), root, get(comm), &req);
    return rc != MPI_SUCCESS ? rc : wait_for(&req, timeout);
}

int cmpi_barrier(int comm, double timeout) {
    MPI_Request req;
    int rc = MPI_Ibarrier(get(comm), &req);
    return rc != MPI_SUCCESS ? rc : wait_for(&req, timeout);
}

int cmpi_split(int comm, int color, int key, int *newcomm) {
    if (comm_count >= MAX_COMMS) return MPI_ERR_OTHER;
    MPI_Comm out;
    int rc = MPI_Comm_split(get(comm), color, key, &out);
    if (rc != MPI_SUCCESS) return rc;
    MPI_Comm_set_errhandler(out, MPI_ERRORS_RETURN);
    comms[comm_count] = out;
    *newcomm = comm_count++;
    return MPI_SUCCESS;
}

int cmpi_free(int comm) {
    if (comm <= 0 || comm >= comm_count || comms[comm] == MPI_COMM_NULL) return MPI_SUCCESS;
    int rc = MPI_Comm_free(&comms[comm]);
    comms[comm] = MPI_COMM_NULL;
    return rc;
}

void cmpi_abort(int comm, int code) { MPI_Abort(get(comm), code); }

const char *cmpi_error_string(int code) {
    static char text[MPI_MAX_ERROR_STRING + 1];
    int len = 0;
    if (code == CMPI_TIMEOUT) return "timed out";
    if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "unknown MPI error";
    text[len] = 0;
    return text;
}
