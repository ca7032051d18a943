/*
 * sock.c — plain and TLS non-blocking I/O, TLS contexts, listening sockets.
 */
#include "sock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

static int ssl_result(qg_sock *s, int r)
{
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return QG_SOCK_AGAIN;
    if (e == SSL_ERROR_ZERO_RETURN) return 0;
    if (e == SSL_ERROR_SYSCALL && errno == EAGAIN) return QG_SOCK_AGAIN;
    ERR_clear_error();
    return QG_SOCK_ERROR;
}

ssize_t qg_sock_read(qg_sock *s, void *buf, size_t n)
{
    if (s->ssl) {
        int r = SSL_read(s->ssl, buf, (int)QG_MIN(n, (size_t)INT32_MAX));
        if (r > 0) return r;
        int e = ssl_result(s, r);
        /* A peer that closes without close_notify is EOF for HTTP framing purposes; the
         * caller decides whether the body was complete. */
        if (e == QG_SOCK_ERROR && SSL_get_error(s->ssl, r) == SSL_ERROR_SYSCALL) return 0;
        return e;
    }
    for (;;) {
        ssize_t r = read(s->fd, buf, n);
        if (r >= 0) return r;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return QG_SOCK_AGAIN;
        return QG_SOCK_ERROR;
    }
}

ssize_t qg_sock_writev(qg_sock *s, const struct iovec *iov, int iovcnt)
{
    if (s->ssl) {
        /* SSL has no writev: coalesce small iovecs so one TLS record carries them. */
        char stage[16384];
        size_t used = 0;
        int i = 0;
        for (; i < iovcnt && used + iov[i].iov_len <= sizeof stage; i++) {
            memcpy(stage + used, iov[i].iov_base, iov[i].iov_len);
            used += iov[i].iov_len;
        }
        const void *p = stage;
        size_t len = used;
        if (used == 0) { /* the first iovec alone is larger than the stage */
            p = iov[0].iov_base;
            len = iov[0].iov_len;
        }
        if (len == 0) return 0;
        int r = SSL_write(s->ssl, p, (int)QG_MIN(len, (size_t)INT32_MAX));
        if (r > 0) return r;
        int e = ssl_result(s, r);
        return e == 0 ? QG_SOCK_ERROR : e;
    }
    for (;;) {
        ssize_t r = writev(s->fd, iov, iovcnt);
        if (r >= 0) return r;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return QG_SOCK_AGAIN;
        return QG_SOCK_ERROR;
    }
}

int qg_sock_handshake(qg_sock *s)
{
    int r = SSL_do_handshake(s->ssl);
    if (r == 1) return 0;
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return QG_SOCK_AGAIN;
    unsigned long code = ERR_peek_last_error();
    long vr = SSL_get_verify_result(s->ssl);
    qg_debug("tls handshake failed: %s (verify: %s)", code ? ERR_reason_error_string(code) : "connection closed",
             X509_verify_cert_error_string(vr));
    ERR_clear_error();
    return QG_SOCK_ERROR;
}

void qg_sock_close(qg_sock *s)
{
    if (s->ssl) {
        SSL_free(s->ssl);
        s->ssl = NULL;
    }
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
}

static void tls_err(char *err, size_t errlen, const char *what, const char *file)
{
    unsigned long code = ERR_get_error();
    snprintf(err, errlen, "%s %s: %s", what, file ? file : "", code ? ERR_reason_error_string(code) : "unknown error");
    ERR_clear_error();
}

SSL_CTX *qg_tls_client_ctx(const char *ca_file, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        tls_err(err, errlen, "SSL_CTX_new", NULL);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT);
    int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL) : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        tls_err(err, errlen, "loading CA file", ca_file ? ca_file : "(system)");
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

SSL_CTX *qg_tls_server_ctx(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        tls_err(err, errlen, "SSL_CTX_new", NULL);
        return NULL;
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        tls_err(err, errlen, "loading certificate", cert_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        tls_err(err, errlen, "loading private key", key_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

int qg_sock_tls_client(qg_sock *s, SSL_CTX *ctx, const char *host)
{
    s->ssl = SSL_new(ctx);
    if (!s->ssl) return -1;
    SSL_set_fd(s->ssl, s->fd);
    SSL_set_connect_state(s->ssl);
    struct in6_addr a6;
    struct in_addr a4;
    bool is_ip = inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
    if (!is_ip) SSL_set_tlsext_host_name(s->ssl, host); /* SNI must not carry IP literals */
    X509_VERIFY_PARAM *vp = SSL_get0_param(s->ssl);
    if (is_ip) X509_VERIFY_PARAM_set1_ip_asc(vp, host);
    else {
        X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        X509_VERIFY_PARAM_set1_host(vp, host, 0);
    }
    return 0;
}

int qg_sock_tls_server(qg_sock *s, SSL_CTX *ctx)
{
    s->ssl = SSL_new(ctx);
    if (!s->ssl) return -1;
    SSL_set_fd(s->ssl, s->fd);
    SSL_set_accept_state(s->ssl);
    return 0;
}

int qg_set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

int qg_listen_tcp(const char *host, int port, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV | AI_NUMERICHOST};
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host, portstr, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "listen address %s: %s (use a numeric address)", host, gai_strerror(gai));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) goto fail;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 4096) < 0) goto fail;
    freeaddrinfo(res);
    return fd;
fail:
    snprintf(err, errlen, "listen on %s:%d: %s", host, port, strerror(errno));
    if (fd >= 0) close(fd);
    freeaddrinfo(res);
    return -1;
}

int qg_local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) return -1;
    if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}
