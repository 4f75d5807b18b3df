// The baseline of bench/allreduce: MPI_Allreduce (float sum) of each size
// given on the command line, `iterations` timed after 2 untimed; rank 0
// prints "bytes median_us" per size, the median of the slowest rank.
// Built only when MPI is found; OpenMPI is a bench-only dependency.
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (argc < 3) {
    if (rank == 0)
      std::fprintf(stderr, "usage: aicon-mpi-allreduce ITERATIONS BYTES...\n");
    MPI_Finalize();
    return 2;
  }
  int iterations = std::atoi(argv[1]);
  for (int a = 2; a < argc; ++a) {
    long bytes = std::atol(argv[a]);
    std::vector<float> buf(static_cast<size_t>(bytes / 4));
    std::vector<double> times;
    for (int i = 0; i < iterations + 2; ++i) {
      std::fill(buf.begin(), buf.end(), static_cast<float>(rank + 1));
      MPI_Barrier(MPI_COMM_WORLD);
      double t0 = MPI_Wtime();
      MPI_Allreduce(MPI_IN_PLACE, buf.data(), static_cast<int>(buf.size()), MPI_FLOAT, MPI_SUM,
                    MPI_COMM_WORLD);
      double t = MPI_Wtime() - t0;
      if (i >= 2)
        times.push_back(t);
    }
    std::sort(times.begin(), times.end());
    double median = times[times.size() / 2], slowest = 0;
    MPI_Reduce(&median, &slowest, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    if (rank == 0)
      std::printf("%ld %.1f\n", bytes, slowest * 1e6);
  }
  MPI_Finalize();
  return 0;
}
