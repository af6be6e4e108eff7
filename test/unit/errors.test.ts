import { test } from 'node:test'
import assert from 'node:assert/strict'
import { errorMessage } from '../../src/util/errors.ts'

test('errorMessage: an Error gives its message, a DOM Event its type (libp2p rejects some dials with one), anything else its string', () => {
  assert.equal(errorMessage(new Error('boom')), 'boom')
  assert.equal(errorMessage(new Event('close')), "ended by a 'close' event")
  assert.equal(errorMessage('plain'), 'plain')
  assert.equal(errorMessage(42), '42')
})
