/* The multiply-accumulate peak of this CPU's AVX-512 units, on all OpenMP threads.
 *
 * Each thread runs CHAINS independent chains of one 512-bit instruction (enough to hide its
 * latency), so the count is limited by the units' throughput alone: an upper bound no
 * convolution or matmul kernel can pass. Built and run by benchmarks/roofline.py:
 *   gcc -O3 -fopenmp -mavx512f [-mavx512bf16 -DWITH_BF16] [-mavx512vnni -DWITH_INT8] peak_fma.c
 *   ./a.out [rounds]   ->   {"fp32": MACs/s, "bf16": MACs/s, "int8": MACs/s}
 * fp32: vfmadd (16 MACs), bf16: vdpbf16ps (32 MACs), int8: vpdpbusd (64 MACs) per instruction.
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#define CHAINS 16

#define KERNEL(NAME, TYPE, ZERO, STEP, MACS_PER_STEP, REDUCE)                                   \
    static double NAME(long rounds, float seed) {                                               \
        double check = 0.0, start = omp_get_wtime();                                            \
        _Pragma("omp parallel reduction(+ : check)") {                                          \
            TYPE acc[CHAINS];                                                                   \
            for (int c = 0; c < CHAINS; c++) acc[c] = ZERO;                                     \
            __m512 fa = _mm512_set1_ps(seed), fb = _mm512_set1_ps(1.0f - seed);                 \
            __m512i ia = _mm512_set1_epi8((char)(seed * 3)), ib = _mm512_set1_epi8(1);          \
            (void)fa; (void)fb; (void)ia; (void)ib;                                             \
            for (long r = 0; r < rounds; r++) {                                                 \
                _Pragma("GCC unroll 16") for (int c = 0; c < CHAINS; c++) acc[c] = STEP;        \
            }                                                                                   \
            for (int c = 0; c < CHAINS; c++) check += REDUCE(acc[c]);                           \
        }                                                                                       \
        double seconds = omp_get_wtime() - start;                                               \
        if (check == 1234.5) fprintf(stderr, "-\n"); /* the results are used */                 \
        return (double)rounds * CHAINS * MACS_PER_STEP * omp_get_max_threads() / seconds;        \
    }

#define REDUCE_PS(v) _mm512_reduce_add_ps(v)
#define REDUCE_EPI32(v) (double)_mm512_reduce_add_epi32(v)

KERNEL(fp32_fma, __m512, _mm512_setzero_ps(), _mm512_fmadd_ps(acc[c], fa, fb), 16, REDUCE_PS)
#ifdef WITH_BF16
KERNEL(bf16_dot, __m512, _mm512_setzero_ps(),
       _mm512_dpbf16_ps(acc[c], _mm512_cvtne2ps_pbh(fa, fb), _mm512_cvtne2ps_pbh(fb, fa)), 32, REDUCE_PS)
#endif
#ifdef WITH_INT8
KERNEL(int8_dot, __m512i, _mm512_setzero_si512(), _mm512_dpbusd_epi32(acc[c], ia, ib), 64, REDUCE_EPI32)
#endif

static double best_of_three(double (*kernel)(long, float), long rounds) {
    double best = 0.0;
    for (int i = 0; i < 3; i++) {
        double rate = kernel(rounds, 0.5f);
        if (rate > best) best = rate;
    }
    return best;
}

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 20000000L;
    printf("{\"fp32\": %.6g", best_of_three(fp32_fma, rounds));
#ifdef WITH_BF16
    printf(", \"bf16\": %.6g", best_of_three(bf16_dot, rounds));
#endif
#ifdef WITH_INT8
    printf(", \"int8\": %.6g", best_of_three(int8_dot, rounds));
#endif
    printf("}\n");
    return 0;
}
