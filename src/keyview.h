/*
 * keyview.h — the JSON of API keys with their live quota, as GET /admin/keys answers it
 * (keyadmin.c) and `quotagate keys --db` prints it from the store (keylocal.c).
 */
#ifndef QG_KEYVIEW_H
#define QG_KEYVIEW_H

#include "keydir.h"

/* One key (secret: the new key's secret, only in a create's answer; NULL otherwise). */
void qg_key_json(qg_buf *b, const qg_keyrec *r, int64_t now, const char *secret);
/* {"object":"list","data":[...],"next":ID|null}: up to limit live keys from seq `from` on. */
void qg_key_list_json(qg_buf *b, const qg_keydir *d, uint32_t from, int64_t limit, int64_t now);

#endif
