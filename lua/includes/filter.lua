-- filter_match(node, rec): the filter language inside Redis, with the meaning documented in
-- redisched/filters.py (its Python evaluate and SQL compiler agree with this file).
-- node: the decoded JSON of redisched.filters.to_lua (leaf {op, col, path?, val, exact?};
--       groups {and = {...}}, {or = {...}}, {not = node}).
-- rec:  a task record; priority, created_at and modified_at are decimal strings. Its data is
--       read (load_data, from common.lua) and decoded on first use, and cached beside rec,
--       never on it, because the scripts save rec back as it is.
-- Lua 5.1 + cjson, no globals: this text is prepended to the scripts that use it.

-- What the scripts use of this file; the rest lives in the block below, so its locals do not
-- count against the 200 a Lua function may hold (the library's main chunk holds every
-- include: queue/scripts.py).
local filter_match, data_unreadable, like_reset
local like_overspent = false
do
local FILTER_NUMERIC_COLUMNS = {priority = true, created_at = true, modified_at = true}
local FILTER_UTF8_CHAR = '[%z\1-\127\194-\244][\128-\191]*'
-- cjson decodes [] and {} to the same empty table. Where that matters (leaf.exact), data is
-- decoded with every empty array written as [NaN] first, then mapped to this one table. No
-- stored JSON holds NaN (msgspec writes null, Postgres refuses it), so [NaN] can only be [].
local FILTER_EMPTY_ARRAY = {}
local filter_decoded = {}  -- keyed by this call's records
per_call(function() filter_decoded = {} end)

local function json_kind(v)
  if v == nil or v == cjson.null then
    return 'null'
  end
  local t = type(v)
  if t ~= 'table' then
    return t
  end
  if v == FILTER_EMPTY_ARRAY or v[1] ~= nil then
    return 'array'
  end
  return 'object'
end

local function is_container(v)
  return type(v) == 'table'
end

-- Returns the index just past the closing quote of the string whose body starts at i.
local function skip_json_string(text, i)
  while true do
    local at = string.find(text, '["\\]', i)
    if string.byte(text, at) == 34 then
      return at + 1
    end
    i = at + 2
  end
end

local function mark_empty_arrays(text)
  if not string.find(text, '%[%s*%]') then
    return text
  end
  local parts, copied, i = {}, 1, 1
  while true do
    local at = string.find(text, '["%[]', i)
    if not at then
      break
    end
    if string.byte(text, at) == 34 then
      i = skip_json_string(text, at + 1)
    else
      local _, close = string.find(text, '^%s*%]', at + 1)
      if close then
        parts[#parts + 1] = string.sub(text, copied, at - 1) .. '[NaN]'
        copied = close + 1
      end
      i = (close or at) + 1
    end
  end
  parts[#parts + 1] = string.sub(text, copied)
  return table.concat(parts)
end

local function restore_empty_arrays(v)
  if v[1] ~= v[1] then -- NaN: the marker
    return FILTER_EMPTY_ARRAY
  end
  for k, x in pairs(v) do
    if type(x) == 'table' then
      v[k] = restore_empty_arrays(x)
    end
  end
  return v
end

local function record_data(rec, exact)
  local cache = filter_decoded[rec]
  if not cache then
    cache = {}
    filter_decoded[rec] = cache
  end
  if cache.bad then
    return nil
  end
  local form = exact and 'exact' or 'plain'
  if cache[form] == nil then
    local text = load_data(rec.id)
    local ok, decoded = pcall(cjson.decode, exact and text and mark_empty_arrays(text) or text)
    if not ok or type(decoded) ~= 'table' then
      -- not JSON (or missing): the task cannot match, and is moved aside (common.lua)
      cache.bad = true
      quarantine_record(rec.id, cjson.encode(rec), text and 'its data is not JSON' or 'it has no data')
      return nil
    end
    cache[form] = exact and restore_empty_arrays(decoded) or decoded
  end
  return cache[form]
end

-- Whether the record's data could not be read: it matches no filter then.
function data_unreadable(rec)
  local cache = filter_decoded[rec]
  return cache ~= nil and cache.bad == true
end

local function field_value(leaf, rec)
  if leaf.col ~= 'data' then
    local v = rec[leaf.col]
    if FILTER_NUMERIC_COLUMNS[leaf.col] and type(v) == 'string' then
      local mark = string.byte(v, 1)
      if mark == 45 then  -- '-': created_at before 1970, as the order key holds it (records.py)
        return tonumber(string.sub(v, 2)) - 1e17
      elseif mark == 58 then  -- ':': created_at after 2286
        return tonumber(string.sub(v, 2))
      end
      return tonumber(v)
    end
    return v
  end
  local v = record_data(rec, leaf.exact)
  for _, key in ipairs(leaf.path or {}) do
    if json_kind(v) ~= 'object' then
      return nil
    end
    v = v[key]
  end
  return v
end

local function json_equal(a, b)
  local kind = json_kind(a)
  if kind ~= json_kind(b) then
    return false
  end
  if kind == 'array' then
    if #a ~= #b then
      return false
    end
    for i = 1, #a do
      if not json_equal(a[i], b[i]) then
        return false
      end
    end
    return true
  end
  if kind == 'object' then
    -- Bounded by the smaller object (one side is the filter's, whose size the cost model
    -- caps): a key of a missing from b ends the first loop, the count ends the second.
    local n = 0
    for k, x in pairs(a) do
      n = n + 1
      if b[k] == nil or not json_equal(x, b[k]) then
        return false
      end
    end
    for _ in pairs(b) do
      n = n - 1
      if n < 0 then
        return false
      end
    end
    return n == 0
  end
  return kind == 'null' or a == b
end

-- Byte order: Lua's own string < follows the server's locale (strcoll). Equal 32-byte
-- chunks are skipped with one comparison each (interned strings), then bytes compared.
local function compare_bytes(a, b)
  if a == b then
    return 0
  end
  local n, from = math.min(#a, #b), 1
  while from + 31 <= n and string.sub(a, from, from + 31) == string.sub(b, from, from + 31) do
    from = from + 32
  end
  for i = from, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x < y and -1 or 1
    end
  end
  return #a < #b and -1 or 1
end

local function ordered(op, a, b)
  local kind = json_kind(a)
  if kind ~= json_kind(b) then
    return false
  end
  local c
  if kind == 'number' then
    c = (a < b and -1) or (a > b and 1) or 0
  elseif kind == 'string' then
    c = compare_bytes(a, b)
  else
    return false
  end
  if op == 'gt' then return c > 0 end
  if op == 'lt' then return c < 0 end
  if op == 'gte' then return c >= 0 end
  return c <= 0
end

-- Redis sets only LC_COLLATE from the environment: string.lower folds ASCII letters alone.
local function ascii_lower(s)
  return string.lower(s)
end

-- LIKE work is metered per call: a string.find over a text of n bytes costs up to n steps
-- per pattern item of the segment, so one leaf over a long field could stall Redis. Before
-- each match the steps it may take are charged; a match that would overspend the call's
-- budget is not run and ends the scan (like_overspent), as the scan budget would.
local like_steps_left = 0
per_call(function() like_steps_left, like_overspent = 0, false end)

function like_reset(steps)
  like_steps_left, like_overspent = steps, false
end

-- LIKE patterns come compiled (redisched.filters._like_segments), one entry per
-- '%'-separated segment: {literal, ascii pattern, runs, has '_', width in bytes}. A segment
-- without '_' is matched as a plain substring; one with '_' as a Lua pattern, '_' one
-- character: `.` when the text is ASCII, else one UTF-8 character (utf8_pattern, built from
-- the runs when first needed).
local function utf8_pattern(seg)
  if not seg[6] then
    local parts = {}
    for k, run in ipairs(seg[3]) do
      parts[k] = type(run) == 'number' and string.rep(FILTER_UTF8_CHAR, run) or run
    end
    seg[6] = table.concat(parts)
  end
  return seg[6]
end

local function like_charge(steps)
  like_steps_left = like_steps_left - steps
  if like_steps_left < 0 then
    like_overspent = true
  end
  return not like_overspent
end

local function is_ascii(text)
  return not string.find(text, '[\128-\255]')
end

-- Where a segment without '_' (a plain substring) occurs: at the start (first), at the end
-- (last), as the whole text (both), else the leftmost occurrence from pos.
local function find_literal(text, literal, pos, first, last)
  local n = #text
  if first and last then
    return text == literal and 1 or nil, n
  elseif first then
    return string.sub(text, 1, #literal) == literal and 1 or nil, #literal
  elseif last then
    local from = n - #literal + 1
    return from >= pos and string.sub(text, from) == literal and from or nil, n
  end
  return string.find(text, literal, pos, true)
end

-- Leftmost match of each fixed-width segment in turn: exact (a later segment can only gain
-- from an earlier end). A segment with '_' costs at most its items per text position it
-- is tried at; every match is charged before it runs (like_charge).
local function like_match(text, segments)
  local n, pos, count, ascii = #text, 1, #segments, nil
  for i, seg in ipairs(segments) do
    local first, last = i == 1, i == count
    local found_at, stop
    if not seg[4] then
      if not like_charge(1 + n / 16) then
        return false
      end
      found_at, stop = find_literal(text, seg[1], pos, first, last)
    else
      if ascii == nil then
        ascii = like_charge(1 + n / 4) and is_ascii(text)
      end
      local pattern = ascii and seg[2] or utf8_pattern(seg)
      if ascii and last then
        -- '_' is one byte: the segment's place is known, it ends the text
        local from = first and 1 or n - seg[5] + 1
        if from < pos or not like_charge(seg[5]) then
          return false
        end
        found_at, stop = string.find(text, '^' .. pattern .. '$', from)
      elseif first then
        if not like_charge(seg[5] * (ascii and 1 or 4)) then
          return false
        end
        found_at, stop = string.find(text, '^' .. pattern .. (last and '$' or ''))
      else
        if not like_charge(seg[5] * (n - pos + 2) * (ascii and 1 or 4)) then
          return false
        end
        found_at, stop = string.find(text, pattern .. (last and '$' or ''), pos)
      end
    end
    if not found_at then
      return false
    end
    pos = stop + 1
  end
  return true
end

-- in / not_in: scalar values are looked up in a set built once per leaf (JSON equality of
-- scalars is Lua equality: 1 == 1.0, and cjson.null is one value); containers compare deeply.
local function in_values(leaf, x)
  if not leaf.set then
    leaf.set, leaf.containers = {}, {}
    for _, item in ipairs(leaf.val) do
      if type(item) == 'table' then
        leaf.containers[#leaf.containers + 1] = item
      else
        leaf.set[item] = true
      end
    end
  end
  if type(x) ~= 'table' then
    return leaf.set[x == nil and cjson.null or x] == true
  end
  for _, item in ipairs(leaf.containers) do
    if json_equal(item, x) then
      return true
    end
  end
  return false
end

local function has_element(array, v)
  for _, item in ipairs(array) do
    if json_equal(item, v) then
      return true
    end
  end
  return false
end

local function contains(field, v)
  local kind = json_kind(field)
  if kind == 'string' then
    return type(v) == 'string' and string.find(field, v, 1, true) ~= nil
  end
  return kind == 'array' and has_element(field, v)
end

-- Postgres JsonbDeepContains: a and b are containers.
local function deep_contains(a, b)
  local kind = json_kind(b)
  if json_kind(a) ~= kind then
    return false
  end
  if kind == 'object' then
    for key, bv in pairs(b) do
      local av = a[key]
      if av == nil then
        return false
      end
      if is_container(bv) then
        if not deep_contains(av, bv) then
          return false
        end
      elseif not json_equal(av, bv) then
        return false
      end
    end
    return true
  end
  for _, bv in ipairs(b) do
    local found = false
    for _, av in ipairs(a) do
      if is_container(bv) then
        found = is_container(av) and deep_contains(av, bv)
      else
        found = json_equal(av, bv)
      end
      if found then
        break
      end
    end
    if not found then
      return false
    end
  end
  return true
end

-- Postgres a @> b: at the top, an array also contains a scalar element.
local function jsonb_contains(a, b)
  if is_container(a) then
    if is_container(b) then
      return deep_contains(a, b)
    end
    return json_kind(a) == 'array' and has_element(a, b)
  end
  return not is_container(b) and json_equal(a, b)
end

-- An eq/in on strings at the path of a verbatim index (IX_OF_DATA_PATH, from indexes.py)
-- reads the record's copy of the value: rec.ix holds the data's string there, and lacks
-- the index when the data holds none (no string there can match then). The index name,
-- or false, is kept on the leaf (filters are cached across calls: candidates.lua).
local function indexed_leaf(leaf)
  if leaf.ix == nil then
    leaf.ix = false
    local name = leaf.col == 'data' and type(leaf.path) == 'table' and IX_OF_DATA_PATH[table.concat(leaf.path, NUL)]
    if name and (leaf.op == 'eq' or leaf.op == 'in') then
      local values = leaf.op == 'in' and leaf.val or {leaf.val}
      local strings = type(values) == 'table'
      for _, v in ipairs(strings and values or {}) do
        strings = strings and type(v) == 'string'
      end
      leaf.ix = strings and name
    end
  end
  return leaf.ix
end

local function leaf_match(leaf, rec)
  local ix = indexed_leaf(leaf)
  if ix then
    local x = rec.ix[ix]
    if leaf.op == 'eq' then
      return x == leaf.val
    end
    return x ~= nil and in_values(leaf, x)
  end
  if leaf.exact and not leaf.restored then
    leaf.val = restore_empty_arrays({leaf.val})[1]
    leaf.restored = true
  end
  local op, v, x = leaf.op, leaf.val, field_value(leaf, rec)
  if op == 'eq' then return json_equal(x, v) end
  if op == 'ne' then return not json_equal(x, v) end
  if op == 'in' then return in_values(leaf, x) end
  if op == 'not_in' then return not in_values(leaf, x) end
  if op == 'gt' or op == 'lt' or op == 'gte' or op == 'lte' then return ordered(op, x, v) end
  if op == 'contains' then return contains(x, v) end
  if op == '@>' then return jsonb_contains(x, v) end
  if op == '<@' then return jsonb_contains(v, x) end
  if type(x) ~= 'string' then
    return false
  end
  if op == 'starts_with' then
    return string.sub(x, 1, #v) == v
  end
  if op == 'ilike' or op == 'not_ilike' then
    x = ascii_lower(x)
  end
  local hit = like_match(x, leaf.segs)
  if like_overspent then
    return false
  end
  if op == 'like' or op == 'ilike' then
    return hit
  end
  return not hit
end

function filter_match(node, rec)
  if node.op then
    return leaf_match(node, rec)
  end
  if node['and'] then
    for _, child in ipairs(node['and']) do
      if not filter_match(child, rec) then
        return false
      end
    end
    return true
  end
  if node['or'] then
    for _, child in ipairs(node['or']) do
      if filter_match(child, rec) then
        return true
      end
    end
    return false
  end
  return not filter_match(node['not'], rec)
end
end
