/*
 * gpd-runtime-exec PROGRAM [ARGS...]
 *
 * Runs a model runtime for gpuproxyd's local provider, asking the kernel to
 * send it SIGKILL when its parent (the daemon) dies, whatever the way
 * (PR_SET_PDEATHSIG survives execve), so that no runtime outlives the
 * daemon, even after kill -9.  libuv's uv_spawn has no hook to do this in
 * the child, hence this small exec wrapper.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: gpd-runtime-exec PROGRAM [ARGS...]\n");
        return 2;
    }
    pid_t parent = getppid();
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
        perror("gpd-runtime-exec: prctl");
        return 1;
    }
    /* The parent may have died before prctl: then nobody would kill us. */
    if (getppid() != parent)
        return 1;
    execvp(argv[1], argv + 1);
    fprintf(stderr, "gpd-runtime-exec: cannot run %s: %s\n", argv[1], strerror(errno));
    return 127;
}
