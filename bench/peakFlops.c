// The machine's compute limit: fused multiply-adds on independent vector accumulators, one thread per core.
// Built by bench/run.ts with -O3 -march=native, so the vectors are as wide as the CPU has: 16 floats with AVX-512
// (32 vector registers), else 8 (AVX2's 16 registers: more accumulators than registers would spill to memory).
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#ifdef __AVX512F__
#define LANES 16
#else
#define LANES 8
#endif
typedef float vf __attribute__((vector_size(LANES * 4)));
#define ACC 12
static long iters;
static double sink;

static void *work(void *arg) {
  (void)arg;
  vf acc[ACC];
  vf a, b;
  for (int j = 0; j < LANES; j++) { a[j] = 0.999999f; b[j] = 1e-7f; }
  for (int i = 0; i < ACC; i++) acc[i] = b * (float)(i + 1);
  for (long n = 0; n < iters; n++)
    for (int i = 0; i < ACC; i++) acc[i] = acc[i] * a + b;
  double s = 0;
  for (int i = 0; i < ACC; i++) for (int j = 0; j < LANES; j++) s += acc[i][j];
  sink += s;
  return NULL;
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 2;
  iters = argc > 2 ? atol(argv[2]) : 200000000L;
  pthread_t t[64];
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, work, NULL);
  for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  double flops = 2.0 * LANES * ACC * (double)iters * threads;
  printf("{\"threads\": %d, \"lanes\": %d, \"seconds\": %.4f, \"gflops\": %.2f, \"sink\": %g}\n", threads, LANES, secs, flops / secs / 1e9, sink);
  return 0;
}
