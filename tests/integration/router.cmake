# Router integration tests: tandem-router in front of real worker processes.
tandem_library(tandem_router_cluster
  SOURCES router_cluster.cc
  DEPS tandem_worker_pair tandem_testing tandem_service tandem_protos gRPC::grpc++)
target_compile_definitions(tandem_router_cluster PRIVATE
  TANDEM_PREFILL_BINARY="$<TARGET_FILE:tandem-prefill>"
  TANDEM_DECODE_BINARY="$<TARGET_FILE:tandem-decode>"
  TANDEM_ROUTER_BINARY="$<TARGET_FILE:tandem-router>")
add_dependencies(tandem_router_cluster tandem-prefill tandem-decode tandem-router)
foreach(test router_cluster_test router_failures_test)
  tandem_test(${test} LABEL integration SOURCES ${test}.cc DEPS tandem_router_cluster)
endforeach()
