{
  "targets": [
    {
      "target_name": "accel",
      "sources": ["accel.c"],
      "cflags": ["-O3", "-std=gnu11", "-fno-trapping-math", "-fno-math-errno", "-Wall", "-Wextra"],
      "cflags!": ["-O2", "-O0"],
      "libraries": ["-ldl", "-lpthread"],
      "ldflags": ["-pthread"]
    }
  ]
}
