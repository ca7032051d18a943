/*
 * sock.h — non-blocking byte transport over a TCP fd, optionally through OpenSSL.
 *
 * Both the client-facing server (TLS only for `quotagate sim --tls-*`) and the upstream
 * client use it, so the rest of the code never branches on TLS.  Reads and writes never
 * block: they return QG_SOCK_AGAIN and the owner waits for the next epoll edge.  Because
 * TLS may need to read in order to write (and the reverse), owners using TLS retry both
 * directions on any event.
 */
#ifndef QG_SOCK_H
#define QG_SOCK_H

#include "common.h"
#include <openssl/ssl.h>
#include <sys/uio.h>

enum { QG_SOCK_AGAIN = -1, QG_SOCK_ERROR = -2 };

typedef struct {
    int fd;
    SSL *ssl; /* NULL for plain TCP */
} qg_sock;

/* > 0 bytes read, 0 on orderly EOF, QG_SOCK_AGAIN, QG_SOCK_ERROR. */
ssize_t qg_sock_read(qg_sock *s, void *buf, size_t n);
/* > 0 bytes written (possibly fewer than asked), QG_SOCK_AGAIN, QG_SOCK_ERROR. */
ssize_t qg_sock_writev(qg_sock *s, const struct iovec *iov, int iovcnt);
/* TLS handshake step: 0 done, QG_SOCK_AGAIN, QG_SOCK_ERROR (reason logged at debug). */
int qg_sock_handshake(qg_sock *s);
/* Frees SSL and closes the fd (sends no TLS close_notify: a peer that needs one is
 * told by the HTTP framing instead). */
void qg_sock_close(qg_sock *s);

/* TLS contexts.  Client: verifies peers against ca_file (or the system store) with SNI and
 * host-name checks.  Server: certificate chain and key from PEM files.  NULL on failure,
 * with the OpenSSL reason in err. */
SSL_CTX *qg_tls_client_ctx(const char *ca_file, char *err, size_t errlen);
SSL_CTX *qg_tls_server_ctx(const char *cert_file, const char *key_file, char *err, size_t errlen);
/* Starts TLS on a connected fd.  host is used for SNI and certificate name checks. */
int qg_sock_tls_client(qg_sock *s, SSL_CTX *ctx, const char *host);
int qg_sock_tls_server(qg_sock *s, SSL_CTX *ctx);

/* Socket helpers. */
int qg_set_nonblock(int fd);
/* A listening socket with a deep backlog.  One socket is shared by all workers (each
 * registers it with EPOLLEXCLUSIVE); SO_REUSEPORT is avoided on purpose, because it would
 * let a second gateway bind the same port silently and split the traffic. */
int qg_listen_tcp(const char *host, int port, char *err, size_t errlen);
/* The port a listening socket is bound to (for port 0). */
int qg_local_port(int fd);

#endif
