// Chats in and out as SillyTavern's chat files (JSONL): a header line, then
// one message per line. The mapping (also in web/README.md):
//
//   header   user_name        the page's user name ("User" when unset)
//            character_name   the character's name; an import goes to the
//                             character of that name, else the open one
//            create_date      the chat's creation time
//            chat_metadata    kept as it came; wick adds {wick: {title}}
//   message  is_user          role: user (true) or assistant (false)
//            name             who wrote it (written; not needed to read)
//            mes              the text shown
//            swipes, swipe_id the alternative replies and the one shown
//            send_date        kept as it came (written as the chat's time)
//            is_system        narrator and hidden messages: left out on
//                             import (they are not part of the conversation)
//            extra            kept; wick adds {wick: {finish}}
//
// Token ids are not exported: they belong to one model, and an imported
// chat is replayed from its text. Fields wick does not know are kept on the
// message and written back out.

const MAX_LINES = 20000;
const MAX_TEXT = 1 << 20;

const pad = (n) => String(n).padStart(2, '0');
function stDate(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}@${pad(d.getHours())}h${pad(d.getMinutes())}m${pad(d.getSeconds())}s`;
}

// write returns chat as JSONL text.
export function write(chat, { userName, characterName }) {
  const meta = { ...(chat.stMeta || {}), wick: { title: chat.title } };
  const lines = [JSON.stringify({ user_name: userName, character_name: characterName, create_date: stDate(chat.created || Date.now()), chat_metadata: meta })];
  for (const m of chat.messages) {
    const out = { ...(m.st || {}) };
    out.name = m.role === 'user' ? userName : characterName;
    out.is_user = m.role === 'user';
    out.is_system = false;
    if (!out.send_date) out.send_date = new Date(chat.updated || Date.now()).toISOString();
    out.mes = m.text;
    const extra = { ...(out.extra || {}) };
    if (m.finish && m.finish !== 'stop') extra.wick = { finish: m.finish };
    out.extra = extra;
    if (m.swipes && m.swipes.length) {
      out.swipes = m.swipes.map((s) => s.text);
      out.swipe_id = m.swipe || 0;
    }
    lines.push(JSON.stringify(out));
  }
  return lines.join('\n') + '\n';
}

const known = new Set(['name', 'is_user', 'is_system', 'mes', 'swipes', 'swipe_id']);

// read parses JSONL text into {characterName, userName, title, messages,
// skipped}; it throws an error naming the line at fault.
export function read(text) {
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '');
  if (!lines.length) throw new Error('the file is empty');
  if (lines.length > MAX_LINES + 1) throw new Error(`the file has ${lines.length} lines, more than the ${MAX_LINES} messages a chat may have`);
  const parse = (l, i) => {
    let v;
    try { v = JSON.parse(l); } catch (e) { throw new Error(`line ${i + 1} is not JSON: ${e.message}`); }
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error(`line ${i + 1} is not a JSON object`);
    return v;
  };
  const header = parse(lines[0], 0);
  if (!('character_name' in header) && !('user_name' in header)) {
    throw new Error('line 1 is not a SillyTavern chat header (no character_name or user_name)');
  }
  const str = (v, what, i) => {
    if (typeof v !== 'string') throw new Error(`line ${i + 1}: ${what} is not text`);
    if (v.length > MAX_TEXT) throw new Error(`line ${i + 1}: ${what} is longer than ${MAX_TEXT} characters`);
    return v;
  };
  const messages = [];
  let skipped = 0;
  for (let i = 1; i < lines.length; i++) {
    const v = parse(lines[i], i);
    if (v.is_system) { skipped++; continue; }
    const m = { role: v.is_user ? 'user' : 'assistant', text: str(v.mes ?? '', 'mes', i) };
    if (Array.isArray(v.swipes) && v.swipes.length && !v.is_user) {
      m.swipes = v.swipes.map((s, j) => ({ text: str(s, `swipes[${j}]`, i) }));
      const id = Number.isInteger(v.swipe_id) && v.swipe_id >= 0 && v.swipe_id < m.swipes.length ? v.swipe_id : 0;
      m.swipe = id;
      m.text = m.swipes[id].text;
    }
    const finish = v.extra && v.extra.wick && v.extra.wick.finish;
    if (finish === 'length' || finish === 'cancelled') m.finish = finish;
    const st = {};
    for (const [k, x] of Object.entries(v)) if (!known.has(k)) st[k] = x;
    if (st.extra && st.extra.wick) { st.extra = { ...st.extra }; delete st.extra.wick; }
    m.st = st;
    if (m.role === 'assistant' && !messages.some((x) => x.role === 'user')) m.greeting = true;
    messages.push(m);
  }
  const meta = header.chat_metadata && typeof header.chat_metadata === 'object' ? { ...header.chat_metadata } : {};
  const title = meta.wick && typeof meta.wick.title === 'string' ? meta.wick.title.slice(0, 120) : '';
  delete meta.wick;
  return {
    characterName: typeof header.character_name === 'string' ? header.character_name : '',
    userName: typeof header.user_name === 'string' ? header.user_name : '',
    title, stMeta: meta, messages, skipped,
  };
}
