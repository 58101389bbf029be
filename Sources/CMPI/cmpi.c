#include "cmpi.h"
#include <mpi.h>

int cmpi_init(int *provided) {
    int flag = 0;
    MPI_Initialized(&flag);
    if (flag) { MPI_Query_thread(provided); return MPI_SUCCESS; }
    return MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, provided);
}
int cmpi_finalize(void) {
    int flag = 0;
    MPI_Finalized(&flag);
    return flag ? MPI_SUCCESS : MPI_Finalize();
}
int cmpi_initialized(void) { int flag = 0; MPI_Initialized(&flag); return flag; }
int cmpi_world_rank(int *rank) { return MPI_Comm_rank(MPI_COMM_WORLD, rank); }
int cmpi_world_size(int *size) { return MPI_Comm_size(MPI_COMM_WORLD, size); }
int cmpi_allreduce_sum_float_world(float *buffer, int count) {
    return MPI_Allreduce(MPI_IN_PLACE, buffer, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
}
int cmpi_barrier_world(void) { return MPI_Barrier(MPI_COMM_WORLD); }
void cmpi_abort_world(int code) { MPI_Abort(MPI_COMM_WORLD, code); }
const char *cmpi_error_string(int code) {
    static char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "unknown MPI error";
    return text;
}
