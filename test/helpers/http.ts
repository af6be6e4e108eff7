import http from 'node:http'

/**
 * POST of a JSON body to a daemon's RPC port (`HOST:PORT`) over a caller's keep-alive agent, as
 * load generators and KServe tests send it: the status and the answer (parsed JSON, else the
 * text). `body` may be a value or JSON text already made (a load reuses one body).
 */
export async function postJson (agent: http.Agent, rpc: string, urlPath: string, body: unknown, signal: AbortSignal = AbortSignal.timeout(30_000)): Promise<{ status: number, json: any }> {
  const payload = Buffer.from(typeof body === 'string' ? body : JSON.stringify(body))
  try {
    return await postOnce(agent, rpc, urlPath, payload, signal)
  } catch (err) {
    // A kept-alive socket the server closed as idle (its keep-alive timeout) just as this request
    // reused it: the request never reached the server. Node's documented remedy is to send it
    // again on a new socket, as HTTP clients do for a reset on a reused connection.
    if ((err as { reusedSocket?: boolean }).reusedSocket !== true || (err as { code?: string }).code !== 'ECONNRESET') throw err
    return await postOnce(agent, rpc, urlPath, payload, signal)
  }
}

function postOnce (agent: http.Agent, rpc: string, urlPath: string, payload: Buffer, signal: AbortSignal): Promise<{ status: number, json: any }> {
  const [host, port] = rpc.split(':')
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port: Number(port), path: urlPath, method: 'POST', agent, signal, headers: { 'content-type': 'application/json', 'content-length': payload.length } }, res => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString()
        let json: any
        try { json = JSON.parse(text) } catch { json = text }
        resolve({ status: res.statusCode ?? 0, json })
      })
      res.on('error', reject)
    })
    req.on('error', err => { reject(Object.assign(err, { reusedSocket: req.reusedSocket })) })
    req.end(payload)
  })
}
