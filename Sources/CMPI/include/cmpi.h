#ifndef CMPI_H
#define CMPI_H
/* Plain functions over mpi.h: MPI_COMM_WORLD, MPI_FLOAT and MPI_SUM are macros Swift cannot import.
   Every function returns the MPI error code (MPI_SUCCESS == 0) so Swift can name the failing call. */
#include <stddef.h>

int cmpi_init(int *provided_thread_level);
int cmpi_finalize(void);
int cmpi_initialized(void);
int cmpi_world_rank(int *rank);
int cmpi_world_size(int *size);
int cmpi_allreduce_sum_float_world(float *buffer, int count);
int cmpi_barrier_world(void);
void cmpi_abort_world(int code);
const char *cmpi_error_string(int code);

#endif
