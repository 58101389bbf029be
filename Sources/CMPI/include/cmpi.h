#ifndef CMPI_H
#define CMPI_H
/* Plain functions over mpi.h, whose handles and macros (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM) Swift cannot import.
   Communicators are small integer handles (0 is the world). Every function returns the MPI error code
   (0 == MPI_SUCCESS); errors are returned, not fatal (MPI_ERRORS_RETURN on every communicator).
   Collectives run as nonblocking operations completed by polling, so a caller-given timeout can end a wait
   that would otherwise hang (timeout <= 0 waits forever); a timed-out wait returns CMPI_TIMEOUT. */
#include <stddef.h>
#include <stdint.h>

#define CMPI_TIMEOUT (-1000)

enum cmpi_dtype { CMPI_FLOAT = 0, CMPI_DOUBLE = 1, CMPI_INT32 = 2, CMPI_INT64 = 3, CMPI_BYTE = 4 };
enum cmpi_op { CMPI_SUM = 0, CMPI_MAX = 1, CMPI_MIN = 2 };

int cmpi_init(int *provided_thread_level);
int cmpi_finalize(void);
int cmpi_initialized(void);
int cmpi_rank(int comm, int *rank);
int cmpi_size(int comm, int *size);
int cmpi_allreduce(int comm, void *buffer, int count, int dtype, int op, double timeout);
int cmpi_allgather(int comm, const void *send, int count, void *recv, int dtype, double timeout);
int cmpi_allgatherv(int comm, const void *send, int count, void *recv, const int *counts, const int *displs,
                    int dtype, double timeout);
/* Sums (op) every rank's `send` elementwise and leaves rank r's block of counts[r] items in its `recv`. */
int cmpi_reduce_scatter(int comm, const void *send, void *recv, const int *counts, int dtype, int op, double timeout);
int cmpi_bcast(int comm, void *buffer, int count, int dtype, int root, double timeout);
int cmpi_barrier(int comm, double timeout);
/* Point-to-point: receives recv_counts[i] items from sources[i] into recvs[i] and sends send_counts[i] items of
   sends[i] to dests[i], all at once (at most 64 messages; one message per pair of ranks per call). */
int cmpi_exchange(int comm, int nsend, const int *dests, const void *const *sends, const int *send_counts,
                  int nrecv, const int *sources, void *const *recvs, const int *recv_counts, int dtype, double timeout);
int cmpi_split(int comm, int color, int key, int *newcomm);
int cmpi_free(int comm);
void cmpi_abort(int comm, int code);
const char *cmpi_error_string(int code);
double cmpi_wtime(void);

#endif
