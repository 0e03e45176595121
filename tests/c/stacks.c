/* The workload of tests/tests/stacks.rs: two functions that move bytes through libc wrappers,
 * each keeping the exact count of the bytes it moved, per syscall, in the tally it prints.
 *
 *   stacks SRC DST TALLY [--unlink-self] [--wait-for GATE]
 *
 * copy_with_read_write copies SRC to DST with read() and write(), first while the process is
 * single-threaded (glibc's wrappers then make the syscall with no stack adjustment) and again
 * once a thread exists (the wrappers' cancellable path, after `sub $0x28,%rsp`).
 * copy_with_sendfile sends SRC into a pipe with sendfile() (zero copy), which the thread
 * drains with read() in drain(). With --unlink-self it first deletes its own binary (the
 * profiler must still name its frames, by address); with --wait-for it waits until GATE
 * exists before it moves anything (a profiler attaches meanwhile). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <unistd.h>

static unsigned long long rw_read, rw_write, sf_sendfile, drain_read;
static int pipe_fds[2];

static void die(const char *what) {
	perror(what);
	exit(2);
}

void copy_with_read_write(const char *src, const char *dst) {
	static char buf[65536];
	int in = open(src, O_RDONLY);
	int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (in < 0 || out < 0)
		die("open");
	for (;;) {
		ssize_t n = read(in, buf, sizeof buf);
		if (n < 0)
			die("read");
		if (n == 0)
			break;
		rw_read += n;
		ssize_t done = 0;
		while (done < n) {
			ssize_t w = write(out, buf + done, n - done);
			if (w <= 0)
				die("write");
			rw_write += w;
			done += w;
		}
	}
	close(in);
	close(out);
}

void copy_with_sendfile(const char *src, int out) {
	int in = open(src, O_RDONLY);
	if (in < 0)
		die("open");
	for (;;) {
		ssize_t n = sendfile(out, in, NULL, 1 << 20);
		if (n < 0)
			die("sendfile");
		if (n == 0)
			break;
		sf_sendfile += n;
	}
	close(in);
}

void *drain(void *arg) {
	static char buf[65536];
	(void)arg;
	for (;;) {
		ssize_t n = read(pipe_fds[0], buf, sizeof buf);
		if (n < 0)
			die("read pipe");
		if (n == 0)
			return NULL;
		drain_read += n;
	}
}

int main(int argc, char **argv) {
	int unlink_self = 0;
	const char *gate = NULL;
	for (int i = 4; i < argc; i++) {
		if (strcmp(argv[i], "--unlink-self") == 0)
			unlink_self = 1;
		else if (strcmp(argv[i], "--wait-for") == 0 && i + 1 < argc)
			gate = argv[++i];
		else
			argc = 0;
	}
	if (argc < 4) {
		fprintf(stderr, "usage: stacks SRC DST TALLY [--unlink-self] [--wait-for GATE]\n");
		return 2;
	}
	while (gate && access(gate, F_OK) != 0)
		usleep(10000);
	if (unlink_self) {
		char self[4096];
		ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
		if (n < 0)
			die("readlink");
		self[n] = 0;
		if (unlink(self) != 0)
			die("unlink");
	}
	copy_with_read_write(argv[1], argv[2]);
	if (pipe(pipe_fds) != 0)
		die("pipe");
	pthread_t t;
	if (pthread_create(&t, NULL, drain, NULL) != 0)
		die("pthread_create");
	copy_with_read_write(argv[1], argv[2]);
	copy_with_sendfile(argv[1], pipe_fds[1]);
	close(pipe_fds[1]);
	pthread_join(t, NULL);
	/* The profiler reads this process's memory maps while it lives, within 20 ms of a new
	 * stack (later on a loaded machine). */
	usleep(1000000);
	FILE *f = fopen(argv[3], "w");
	if (!f)
		die("fopen");
	fprintf(f, "copy_with_read_write read %llu\ncopy_with_read_write write %llu\n"
		   "copy_with_sendfile sendfile %llu\ndrain read %llu\n",
		rw_read, rw_write, sf_sendfile, drain_read);
	fclose(f);
	return 0;
}
