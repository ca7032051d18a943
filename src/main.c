/*
 * main.c — command dispatch for the `quotagate` binary (SPEC §1).
 * Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.
 */
#include "config.h"
#include "gateway.h"
#include "keyscli.h"
#include "sim.h"
#include "status.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#define QG_VERSION "0.1.0"

static void usage(FILE *f)
{
    fputs("usage: quotagate COMMAND [options]\n"
          "commands:\n"
          "  serve [-c FILE]   run the gateway (default config ./quotagate.yaml)\n"
          "  check [-c FILE]   validate a config; errors name file:line and the field\n"
          "  sim [options]     run the simulated provider (quotagate sim --help)\n"
          "  keys COMMAND      the running gateway's API keys: list, show ID, reset ID (keys --help)\n"
          "  status [-c FILE]  table of upstream accounts and their quota buckets (--db, --json)\n"
          "  --version         print the version\n"
          "Every command takes --help.  Docs: README.md and docs/.\n",
          f);
}

/* Parses `-c FILE` / `--config FILE` for serve and check. */
static int config_arg(int argc, char **argv, const char *cmd, const char **path)
{
    static const struct option opts[] = {{"config", 1, 0, 'c'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    *path = "quotagate.yaml";
    optind = 1;
    int o;
    while ((o = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        if (o == 'c') *path = optarg;
        else {
            FILE *f = o == 'h' ? stdout : stderr;
            fprintf(f, "usage: quotagate %s [-c FILE]\n  -c, --config FILE   the YAML configuration (default ./quotagate.yaml)\n", cmd);
            return o == 'h' ? 0 : 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "quotagate %s: unexpected argument %s\n", cmd, argv[optind]);
        return 2;
    }
    return -1;
}

static int cmd_check(int argc, char **argv)
{
    const char *path;
    int rc = config_arg(argc, argv, "check", &path);
    if (rc >= 0) return rc;
    qg_config *cfg = qg_config_load_or_report(path);
    if (!cfg) return 2;
    size_t accounts = 0;
    for (size_t i = 0; i < cfg->n_providers; i++) accounts += cfg->providers[i].n_accounts;
    printf("%s: ok (%zu providers, %zu accounts, %zu keys)\n", path, cfg->n_providers, accounts, cfg->n_keys);
    qg_config_free(cfg);
    return 0;
}

static int cmd_serve(int argc, char **argv)
{
    const char *path;
    int rc = config_arg(argc, argv, "serve", &path);
    if (rc >= 0) return rc;
    const char *lvl = getenv("QUOTAGATE_LOG");
    if (lvl && !strcmp(lvl, "debug")) qg_log_level = QG_LOG_DEBUG;
    return qg_serve(path);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("quotagate %s\n", QG_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "serve")) return cmd_serve(argc - 1, argv + 1);
    if (!strcmp(cmd, "check")) return cmd_check(argc - 1, argv + 1);
    if (!strcmp(cmd, "sim")) return qg_sim_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "keys")) return qg_keys_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "status")) return qg_status_main(argc - 1, argv + 1);
    fprintf(stderr, "quotagate: unknown command %s\n", cmd);
    usage(stderr);
    return 2;
}
