# Router integration tests: tandem-router in front of real worker processes.
tandem_library(tandem_router_cluster
  SOURCES router_cluster.cc
  DEPS tandem_worker_pair tandem_testing tandem_service tandem_protos gRPC::grpc++)
target_compile_definitions(tandem_router_cluster PRIVATE
  TANDEM_PREFILL_BINARY="$<TARGET_FILE:tandem-prefill>"
  TANDEM_DECODE_BINARY="$<TARGET_FILE:tandem-decode>"
  TANDEM_ROUTER_BINARY="$<TARGET_FILE:tandem-router>")
add_dependencies(tandem_router_cluster tandem-prefill tandem-decode tandem-router)
foreach(test router_cluster_test router_failures_test router_affinity_test)
  if(TANDEM_SANITIZE STREQUAL "thread")
    # The test and the processes it starts inherit TSAN_OPTIONS (tsan_router.supp).
    add_executable(${test} ${test}.cc)
    target_link_libraries(${test} PRIVATE tandem_router_cluster tandem_testing GTest::gmock
                          GTest::gtest_main tandem_warnings)
    gtest_discover_tests(${test} DISCOVERY_MODE PRE_TEST DISCOVERY_TIMEOUT 60
      PROPERTIES LABELS integration TIMEOUT 300 ENVIRONMENT
      "TSAN_OPTIONS=suppressions=${CMAKE_CURRENT_SOURCE_DIR}/tsan_router.supp halt_on_error=1")
  else()
    tandem_test(${test} LABEL integration SOURCES ${test}.cc DEPS tandem_router_cluster)
  endif()
endforeach()

# The disaggregated cluster on two GPUs (label multi_gpu; skipped with fewer than two).
if(TANDEM_HAVE_NCCL)
  tandem_test(gpu_cluster_test LABEL multi_gpu SOURCES gpu_cluster_test.cc
              DEPS tandem_router_cluster CUDA::cudart)
endif()
